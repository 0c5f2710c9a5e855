"""A version whose validating process stopped mid-way (a deploy's restart, a crash) does not stay
`validating` forever: the beat sweep fails it with a reason staff and customers can read."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apiservice.celery import app as celery_app
from models_registry.models import ModelVersion
from models_registry.services import INTERRUPTED, model_get_or_create
from models_registry.tasks import validation_sweep


def _validating(name: str, *, started_ago: timedelta) -> ModelVersion:
    """A version as `model_version_register` leaves it when its process dies during validation."""
    model = model_get_or_create(name=name, organisation_id=None)
    return ModelVersion.objects.create(
        model=model,
        number=1,
        sha256="0" * 64,
        status=ModelVersion.Status.VALIDATING,
        created_at=timezone.now() - started_ago,
    )


def test_a_version_left_validating_past_any_validation_is_failed_with_a_reason(db, iris):
    limit = timedelta(seconds=settings.MODEL_VALIDATION_TIMEOUT_SECONDS)
    abandoned = _validating("abandoned", started_ago=limit + timedelta(hours=1))
    running = _validating("running", started_ago=limit)  # a slow validation may still be under way

    assert validation_sweep.apply().get() == 1

    abandoned.refresh_from_db()
    running.refresh_from_db()
    iris.refresh_from_db()
    assert (abandoned.status, abandoned.failure_reason) == ("failed", INTERRUPTED)
    assert running.status == "validating"
    assert iris.status == "ready"
    assert validation_sweep.apply().get() == 0  # nothing more to do: safe to run again


def test_beat_runs_the_sweep():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == validation_sweep.name)
    assert entry["schedule"] <= 3600
    assert validation_sweep.name in celery_app.tasks
