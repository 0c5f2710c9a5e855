"""The Celery app. Tasks live in each app's `tasks.py`; periodic ones in CELERY_BEAT_SCHEDULE."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")

app = Celery("modelmeter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
