"""A worker SIGKILLed in the middle of a job: another worker finishes it, exactly once."""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from batches.models import BatchChunk
from batches.tasks import batch_validate
from billing.models import UsageRecord
from tests import live

from .conftest import WORKER_ENV, content, create, json_lines, jsonl, upload, wait

pytestmark = [pytest.mark.live]
QUEUE = f"kill-test-{os.getpid()}"


def _kill_hard(pid: int) -> None:
    """SIGKILL the worker's main process and its pool processes, as a machine loss would."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    os.kill(pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)


def test_it_completes_a_job_whose_worker_was_killed_mid_job(transactional_db, api, diabetes, monkeypatch, tmp_path):
    monkeypatch.setattr(batch_validate, "delay", lambda batch_id: batch_validate.apply_async((batch_id,), queue=QUEUE))
    env = {**WORKER_ENV, "CELERY_TASK_DEFAULT_QUEUE": QUEUE, "BATCH_VALIDATION_PART_BYTES": "65536"}
    total = 8000
    with live.celery_worker(tmp_path, name="victim", **env) as victim:
        batch = create(api, upload(api, jsonl(total))["id"])
        running = wait(api, batch["id"], until={"in_progress"})
        while running["request_counts"]["completed"] < 500:
            time.sleep(0.05)
            running = api.get(f"/v1/batches/{batch['id']}").json()
        _kill_hard(victim.process.pid)
        victim.process.wait()
    killed_at = api.get(f"/v1/batches/{batch['id']}").json()
    assert killed_at["status"] == "in_progress"
    assert killed_at["request_counts"]["completed"] < total
    with live.celery_worker(tmp_path, name="rescuer", **env):
        done = wait(api, batch["id"], timeout=240)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": total, "completed": total, "failed": 0}
    custom_ids = [line["custom_id"] for line in json_lines(content(api, done["output_file_id"]))]
    assert len(custom_ids) == len(set(custom_ids)) == total
    billed = UsageRecord.objects.filter(face="batch")
    assert sum(billed.values_list("units", flat=True)) == total
    assert (
        billed.count() == BatchChunk.objects.filter(batch__uid=batch["id"]).count() == done["progress"]["chunks_total"]
    )


def test_a_redelivered_validation_queues_the_chunks_its_dead_run_never_queued(
    api, diabetes, in_process, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.BATCH_CHUNK_ROWS = 20
    from batches import execution, validation
    from batches.models import Batch, BatchPart

    queued: list[int] = []
    monkeypatch.setattr("batches.tasks.batch_chunk_run.delay", queued.append)
    batch = Batch.objects.get(uid=create(api, upload(api, jsonl(120))["id"])["id"])
    validation.batch_validate(batch_id=batch.pk)
    for part in BatchPart.objects.filter(batch=batch):
        validation.part_validate(part_id=part.pk)
    validation.batch_validate_finish(batch_id=batch.pk)  # committed the chunks, died before queueing them
    chunk_ids = list(BatchChunk.objects.filter(batch=batch).order_by("index").values_list("pk", flat=True))
    assert len(chunk_ids) >= 3 and queued == []
    execution.chunk_run(chunk_id=chunk_ids[0])  # a chunk some worker ran meanwhile

    with django_capture_on_commit_callbacks(execute=True):
        validation.batch_validate_finish(batch_id=batch.pk)  # the last two parts both queued the merge
    assert queued == []

    with django_capture_on_commit_callbacks(execute=True):
        validation.batch_validate_finish(batch_id=batch.pk, redelivered=True)
    assert queued == chunk_ids[1:]
    for chunk_id in queued:
        execution.chunk_run(chunk_id=chunk_id)
    execution.batch_finalize(batch_id=batch.pk)
    done = api.get(f"/v1/batches/{batch.uid}").json()
    assert done["request_counts"] == {"total": 120, "completed": 120, "failed": 0}
