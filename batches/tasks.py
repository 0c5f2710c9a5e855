"""Thin Celery tasks: ids in, one service call. Every one is safe to run twice."""

from celery import shared_task
from celery.app.task import Task

from . import execution, validation, webhooks


@shared_task
def batch_validate(batch_id: int) -> None:
    validation.batch_validate(batch_id=batch_id)


@shared_task
def batch_validate_part(part_id: int) -> None:
    validation.part_validate(part_id=part_id)


@shared_task(bind=True)
def batch_validate_finish(self: Task, batch_id: int) -> None:
    # A message restored after its worker died (kombu marks it redelivered) may have left chunks unqueued.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    validation.batch_validate_finish(batch_id=batch_id, redelivered=redelivered)


@shared_task(bind=True, max_retries=5)
def batch_chunk_run(self: Task, chunk_id: int) -> None:
    try:
        execution.chunk_run(chunk_id=chunk_id)
    except execution.ChunkRetry as exc:
        raise self.retry(countdown=exc.countdown) from None


@shared_task
def batch_finalize(batch_id: int) -> None:
    execution.batch_finalize(batch_id=batch_id)


@shared_task(bind=True, max_retries=20)
def webhook_deliver(self: Task, delivery_id: int) -> None:
    delay = webhooks.webhook_attempt(delivery_id=delivery_id)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task
def batches_sweep() -> None:
    execution.batches_sweep()
