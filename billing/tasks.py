"""Billing's periodic tasks (CELERY_BEAT_SCHEDULE): thin wrappers over idempotent services."""

from celery import shared_task

from . import idempotency, outbox


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def usage_push() -> dict[str, int]:
    """Claim unreported ledger rows and send them to Stripe (safe to run concurrently or again)."""
    return outbox.usage_push()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def usage_reconcile() -> int:
    return outbox.usage_reconcile()


@shared_task(ignore_result=True)
def idempotency_purge() -> int:
    return idempotency.idempotency_purge()
