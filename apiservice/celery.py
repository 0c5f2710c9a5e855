"""The Celery app. Tasks live in each app's `tasks.py`; periodic ones in CELERY_BEAT_SCHEDULE."""

import gc
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")

app = Celery("modelmeter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_startup_heap(**kwargs: Any) -> None:
    """Take what start-up allocated (Django, the apps, numpy, ORT) out of the cyclic GC's sight.

    Batch validation and chunks allocate millions of short-lived containers, and each full collection
    would walk the ~200k objects of start-up again: about a quarter of the validation's time in
    `bench/batch.py`. Those objects live as long as the process anyway, so freezing them loses nothing.
    """
    gc.freeze()
