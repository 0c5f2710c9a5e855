import os

from django.core.wsgi import get_wsgi_application

from .wsgi_input import PlainBody

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")
application = PlainBody(get_wsgi_application())
