import os

import django

from .wsgi_input import PlainBody

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")
django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does

from .handler import APIHandler  # noqa: E402  (needs the app registry)

application = PlainBody(APIHandler())
