"""Validation's part files never outlive a batch that stops (fails, is cancelled, expires) mid-validation."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from batches import execution, storage, validation
from batches.models import Batch, BatchPart

from .conftest import create, jsonl, upload


def _stop(how: str, batch: Batch, api: Any) -> None:
    """What another worker, the API or the sweep does while a part is running."""
    if how == "cancel":
        assert api.post(f"/v1/batches/{batch.uid}/cancel").status_code == 200
    elif how == "expire":
        Batch.objects.filter(pk=batch.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        batch.refresh_from_db()
        assert execution.batch_expire_if_due(batch=batch)
    else:
        assert execution.batch_fail(batch=batch, errors=[{"code": "validation_error", "message": "x", "line": None}])


def _part_files(settings: Any, batch: Batch) -> list[str]:
    prefix = storage.batch_prefix(organisation_id=batch.organisation_id, batch_uid=batch.uid)
    folder = Path(settings.MEDIA_ROOT) / prefix / "parts"
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("how", ["fail", "cancel", "expire"])
def test_it_leaves_no_part_files_when_a_batch_stops_while_parts_run(
    api, diabetes, no_queue, settings, monkeypatch, django_capture_on_commit_callbacks, how
):
    settings.BATCH_VALIDATION_PART_BYTES = 2048
    settings.BATCH_CHUNK_ROWS = 5
    batch = Batch.objects.get(uid=create(api, upload(api, jsonl(60))["id"])["id"])
    validation.batch_validate(batch_id=batch.pk)
    parts = list(BatchPart.objects.filter(batch=batch).order_by("index"))
    assert len(parts) >= 3
    validation.part_validate(part_id=parts[0].pk)
    assert _part_files(settings, batch)  # what a finished part keeps for the merge

    run = validation._part_run

    def stopped_meanwhile(batch_: Batch, part: BatchPart, claim: str) -> dict[str, Any]:
        # The part has checked that its batch still validates; now the batch stops and is finalised
        # (the parts folder emptied) before the part writes its files.
        _stop(how, batch, api)
        with django_capture_on_commit_callbacks(execute=True):
            execution.batch_finalize(batch_id=batch.pk)
        return run(batch_, part, claim)

    monkeypatch.setattr(validation, "_part_run", stopped_meanwhile)
    validation.part_validate(part_id=parts[1].pk)
    monkeypatch.setattr(validation, "_part_run", run)
    for part in parts[2:]:
        validation.part_validate(part_id=part.pk)
    with django_capture_on_commit_callbacks(execute=True):
        validation.batch_validate_finish(batch_id=batch.pk)

    batch.refresh_from_db()
    assert batch.status == {"fail": "failed", "cancel": "cancelled", "expire": "expired"}[how]
    assert _part_files(settings, batch) == []


def test_it_keeps_part_files_until_the_merge_of_a_batch_still_validating(api, diabetes, no_queue, settings):
    settings.BATCH_VALIDATION_PART_BYTES = 2048
    batch = Batch.objects.get(uid=create(api, upload(api, jsonl(60))["id"])["id"])
    validation.batch_validate(batch_id=batch.pk)
    parts = list(BatchPart.objects.filter(batch=batch).order_by("index"))
    for part in parts:
        validation.part_validate(part_id=part.pk)
    names = _part_files(settings, batch)
    assert len([name for name in names if name.endswith(".hashes.npy")]) == len(parts)
    assert any(name.endswith(".npy") and not name.endswith(".hashes.npy") for name in names)
