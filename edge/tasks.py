"""Celery tasks for edge bundles: thin, idempotent (the service claims the row first)."""

from celery import shared_task
from django.db import OperationalError


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def bundle_build(bundle_id: int) -> None:
    from . import services

    services.bundle_build(bundle_id=bundle_id)
