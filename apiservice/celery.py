"""The Celery app. Tasks live in each app's `tasks.py`; periodic ones in CELERY_BEAT_SCHEDULE."""

import gc
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")

app = Celery("modelmeter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _log_like_the_web(**kwargs: Any) -> None:
    """Workers and beat log as gunicorn does: JSON lines from settings.LOGGING (LOG_LEVEL), not Celery's text
    format, so one log pipeline reads every process. (A receiver here stops Celery configuring logging.)"""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_process_init.connect
def _freeze_startup_heap(**kwargs: Any) -> None:
    """Take what start-up allocated (Django, the apps, numpy, ORT) out of the cyclic GC's sight.

    Batch validation and chunks allocate millions of short-lived containers, and each full collection
    would walk the ~200k objects of start-up again: about a quarter of the validation's time in
    `bench/batch.py`. Those objects live as long as the process anyway, so freezing them loses nothing.
    """
    gc.freeze()
