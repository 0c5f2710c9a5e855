"""Batches end to end: the in-process API, a real Celery worker, PostgreSQL and Redis."""

import pytest

from billing.models import UsageRecord

from .conftest import content, create, csv_text, json_lines, jsonl, upload, wait

pytestmark = [pytest.mark.live]


def test_it_runs_a_jsonl_batch_to_completion(transactional_db, batch_worker, api, diabetes):
    file = upload(api, jsonl(230))
    batch = create(api, file["id"], metadata={"team": "ml"})
    assert batch["status"] == "validating"
    assert batch["model_version"] == str(diabetes.number)
    done = wait(api, batch["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 230, "completed": 230, "failed": 0}
    assert done["progress"]["chunks_total"] == 5
    assert done["error_file_id"] is None
    lines = json_lines(content(api, done["output_file_id"]))
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(230)]
    assert all(line["error"] is None and len(line["response"]["predictions"]) == 1 for line in lines)
    billed = UsageRecord.objects.filter(face="batch", meter="batch_rows")
    assert sum(billed.values_list("units", flat=True)) == 230
    assert billed.count() == 5
