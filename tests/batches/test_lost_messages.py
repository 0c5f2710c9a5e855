"""A batch created while the broker is down exists, is answered 201, and is validated once it is back."""

from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from batches import execution
from batches.models import Batch

from .conftest import jsonl, upload


def _broker_down(*args: object) -> None:
    raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.mark.django_db(transaction=True)  # on_commit runs inside the request, as in production
def test_it_creates_the_batch_when_the_broker_is_down(api, diabetes, monkeypatch):
    monkeypatch.setattr("batches.tasks.batch_validate.delay", _broker_down)
    file_id = upload(api, jsonl(2))["id"]
    response = api.post_json("/v1/batches", {"input_file_id": file_id, "model": "diabetes"})
    assert response.status_code == 201, response.content
    assert Batch.objects.get(uid=response.json()["id"]).status == Batch.Status.VALIDATING


def test_the_sweep_queues_again_a_batch_whose_validation_message_was_lost(api, diabetes, no_queue, settings):
    file_id = upload(api, jsonl(2))["id"]
    lost = Batch.objects.get(
        uid=api.post_json("/v1/batches", {"input_file_id": file_id, "model": "diabetes"}).json()["id"]
    )
    fresh = Batch.objects.get(
        uid=api.post_json("/v1/batches", {"input_file_id": file_id, "model": "diabetes"}).json()["id"]
    )
    before_stale = timezone.now() - timedelta(seconds=settings.BATCH_STALE_CHUNK_SECONDS + 1)
    Batch.objects.filter(pk=lost.pk).update(created_at=before_stale)
    no_queue.clear()
    execution.batches_sweep()
    assert no_queue == [lost.pk]
    assert fresh.pk not in no_queue
