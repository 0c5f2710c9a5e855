"""Thin Celery tasks: one service call each, safe to run twice."""

from celery import shared_task

from . import services


@shared_task
def validation_sweep() -> int:
    return services.model_versions_interrupted_fail()
