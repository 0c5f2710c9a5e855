"""Batches end to end: the in-process API, a real Celery worker, PostgreSQL and Redis."""

import contextlib
import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.models import UsageRecord

from .conftest import TERMINAL, content, create, csv_text, json_lines, jsonl, rows, upload, wait

pytestmark = [pytest.mark.live]


def test_it_runs_a_jsonl_batch_to_completion(transactional_db, batch_worker, api, diabetes):
    file = upload(api, jsonl(230))
    batch = create(api, file["id"], metadata={"team": "ml"})
    assert batch["status"] == "validating"
    assert batch["model_version"] == str(diabetes.number)
    done = wait(api, batch["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 230, "completed": 230, "failed": 0}
    assert done["error_file_id"] is None
    lines = json_lines(content(api, done["output_file_id"]))
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(230)]
    assert all(line["error"] is None and len(line["response"]["predictions"]) == 1 for line in lines)
    billed = UsageRecord.objects.filter(face="batch", meter="batch_rows")
    assert sum(billed.values_list("units", flat=True)) == 230
    # Chunks of at most 50 rows, cut inside each 4 KiB validation part: one ledger row per chunk.
    assert billed.count() == done["progress"]["chunks_total"] >= 5


def test_it_numbers_lines_from_the_file_start_across_validation_parts(transactional_db, batch_worker, api, diabetes):
    lines = jsonl(200).splitlines()
    lines[2] = b'{"custom_id": "req-2", "instances": [[1, 2'
    lines[149] = b"not json"
    lines.insert(100, b"")  # a blank line: line numbers after it move by one, request counts do not
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 6 * 4096  # several validation parts
    number = {}
    for n, line in enumerate(lines, 1):
        with contextlib.suppress(ValueError):
            number[json.loads(line)["custom_id"]] = n
    done = wait(api, create(api, upload(api, data)["id"])["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 200, "completed": 198, "failed": 2}
    assert [error["line"] for error in done["errors"]["data"]] == [3, 151]
    errors = json_lines(content(api, done["error_file_id"]))
    assert [(error["line"], error["id"]) for error in errors] == [(3, f"{done['id']}-3"), (151, f"{done['id']}-151")]
    outputs = json_lines(content(api, done["output_file_id"]))
    assert len(outputs) == 198
    assert all(line["id"] == f"{done['id']}-{number[line['custom_id']]}" for line in outputs)


def test_it_numbers_csv_lines_across_validation_parts(transactional_db, batch_worker, api, diabetes):
    data = b"\n" + csv_text(150)  # the header is line 2, row i is line i + 3
    assert len(data) > 3 * 4096
    done = wait(api, create(api, upload(api, data, "rows.csv")["id"])["id"])
    assert done["status"] == "completed", done
    outputs = json_lines(content(api, done["output_file_id"]))
    assert [line["id"] for line in outputs] == [f"{done['id']}-{i + 3}" for i in range(150)]
    assert [line["custom_id"] for line in outputs] == [f"row-{i}" for i in range(150)]


def test_it_predicts_what_the_online_api_predicts(transactional_db, batch_worker, api, diabetes):
    file = upload(api, jsonl(3, seed=7))
    done = wait(api, create(api, file["id"])["id"])
    batch_predictions = [
        line["response"]["predictions"][0] for line in json_lines(content(api, done["output_file_id"]))
    ]
    online = api.post_json(
        "/v1/models/diabetes:predict",
        {"instances": [json.loads(raw)["instances"][0] for raw in jsonl(3, seed=7).splitlines()]},
    )
    assert batch_predictions == online.json()["predictions"]


def test_it_accepts_columnar_inputs_lines_and_several_rows_per_line(transactional_db, batch_worker, api, diabetes):
    data = (
        json.dumps({"custom_id": "a", "inputs": {"input": rows(3)}})
        + "\n"
        + json.dumps({"custom_id": "b", "instances": rows(2, seed=1)})
        + "\n"
    ).encode()
    done = wait(api, create(api, upload(api, data)["id"])["id"])
    assert done["status"] == "completed"
    out = {line["custom_id"]: line["response"] for line in json_lines(content(api, done["output_file_id"]))}
    assert len(out["a"]["outputs"]) == 3
    assert len(out["b"]["predictions"]) == 2
    assert sum(UsageRecord.objects.filter(face="batch").values_list("units", flat=True)) == 5


def test_it_runs_a_csv_batch_with_jsonl_and_with_csv_output(transactional_db, batch_worker, api, diabetes):
    file = upload(api, csv_text(120), "rows.csv")
    assert file["format"] == "csv"
    as_jsonl = wait(api, create(api, file["id"])["id"])
    as_csv = wait(api, create(api, file["id"], output_format="csv")["id"])
    assert as_jsonl["status"] == as_csv["status"] == "completed"
    lines = json_lines(content(api, as_jsonl["output_file_id"]))
    assert [line["custom_id"] for line in lines] == [f"row-{i}" for i in range(120)]
    table = list(csv.reader(io.StringIO(content(api, as_csv["output_file_id"]).decode())))
    assert table[0] == ["custom_id", *[f"input_{i}" for i in range(10)], "variable"]
    assert len(table) == 121
    assert [float(r[-1]) for r in table[1:]] == pytest.approx([line["response"]["predictions"][0][0] for line in lines])


def test_it_names_csv_rows_by_line_without_a_custom_id_column(transactional_db, batch_worker, api, diabetes):
    done = wait(api, create(api, upload(api, csv_text(4, custom_id=False), "rows.csv")["id"])["id"])
    assert [line["custom_id"] for line in json_lines(content(api, done["output_file_id"]))] == [
        "line-2",
        "line-3",
        "line-4",
        "line-5",
    ]


def _broken_json() -> bytes:
    lines = jsonl(40).splitlines()
    lines[3] = b'{"custom_id": "req-3", "instances": [[1, 2'
    return b"\n".join(lines) + b"\n"


def _wrong_shape() -> bytes:
    lines = jsonl(40).splitlines()
    lines[5] = json.dumps({"custom_id": "req-5", "instances": [[1.0, 2.0]]}).encode()
    return b"\n".join(lines) + b"\n"


def _duplicate(lines: int = 10) -> bytes:
    return jsonl(lines) + json.dumps({"custom_id": "req-2", "instances": rows(1)}).encode() + b"\n"


# (file name, content, status, code on the batch or on the failed line, line number)
BAD_FILES = [
    ("header-only.csv", csv_text(0), "failed", "empty_file", None),
    ("latin1.jsonl", '{"custom_id": "caf\u00e9"}\n'.encode("latin-1") * 3, "failed", "too_many_invalid_lines", None),
    ("latin1.csv", "custom_id,caf\u00e9\n".encode("latin-1"), "failed", "invalid_encoding", 1),
    ("broken.jsonl", _broken_json(), "completed", "invalid_json", 4),
    ("missing.csv", b"custom_id,input_0,input_1\nr,1,2\n", "failed", "missing_column", 1),
    ("shape.jsonl", _wrong_shape(), "completed", "invalid_input", 6),
    ("duplicate.jsonl", _duplicate(), "failed", "duplicate_custom_id", 11),
    ("duplicate-in-another-part.jsonl", _duplicate(100), "failed", "duplicate_custom_id", 101),
]


@pytest.mark.parametrize(("name", "data", "status", "code", "line"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_it_reports_bad_files(transactional_db, batch_worker, api, diabetes, name, data, status, code, line):
    done = wait(api, create(api, upload(api, data, name)["id"])["id"])
    assert done["status"] == status, done
    if status == "failed":
        assert done["errors"]["data"][0]["code"] in (code, "too_many_invalid_lines")
        assert any(e["code"] == code and e["line"] == line for e in done["errors"]["data"]), done["errors"]
        assert done["failed_at"] is not None
        return
    assert done["request_counts"] == {"total": 40, "completed": 39, "failed": 1}
    custom_id = {"broken.jsonl": None, "shape.jsonl": "req-5"}[name]  # kept when the line's own was valid
    message = done["errors"]["data"][0]["message"]
    assert done["errors"]["data"] == [{"code": code, "message": message, "line": line, "custom_id": custom_id}]
    (error,) = json_lines(content(api, done["error_file_id"]))
    assert (error["line"], error["custom_id"]) == (line, custom_id)
    assert error["error"]["code"] == code
    assert error["response"] is None
    assert len(json_lines(content(api, done["output_file_id"]))) == 39
    assert sum(UsageRecord.objects.filter(face="batch").values_list("units", flat=True)) == 39


def test_it_refuses_empty_and_oversized_uploads(transactional_db, api, settings):
    empty = api.post("/v1/files", {"file": SimpleUploadedFile("e.jsonl", b""), "purpose": "batch"})
    assert empty.status_code == 400
    assert empty.json()["error"]["code"] == "empty_file"
    settings.FILE_MAX_BYTES = 1000
    big = api.post("/v1/files", {"file": SimpleUploadedFile("big.jsonl", jsonl(100)), "purpose": "batch"})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "payload_too_large"
    exact = jsonl(1000)  # a file of exactly FILE_MAX_BYTES fits, its multipart envelope notwithstanding
    settings.FILE_MAX_BYTES = len(exact)
    assert (
        api.post("/v1/files", {"file": SimpleUploadedFile("cap.jsonl", exact), "purpose": "batch"}).status_code == 201
    )
    over = api.post("/v1/files", {"file": SimpleUploadedFile("over.jsonl", exact + b"\n"), "purpose": "batch"})
    assert over.status_code == 413
    assert over.json()["error"]["param"] == "file"


def test_it_cancels_a_running_batch_and_keeps_partial_output(transactional_db, batch_worker, api, diabetes):
    batch = create(api, upload(api, jsonl(10_000))["id"])
    running = wait(api, batch["id"], until={"in_progress", *TERMINAL})
    while running["status"] == "in_progress" and running["request_counts"]["completed"] == 0:
        running = api.get(f"/v1/batches/{batch['id']}").json()
    cancel = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert cancel.status_code == 200
    assert cancel.json()["status"] in ("cancelling", "cancelled")
    done = wait(api, batch["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert done["cancelled_at"]
    assert done["cancelling_at"]
    counts = done["request_counts"]
    assert 0 < counts["completed"] < 10_000
    assert len(json_lines(content(api, done["output_file_id"]))) == counts["completed"]
    assert sum(UsageRecord.objects.filter(face="batch").values_list("units", flat=True)) == counts["completed"]
    again = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


def test_it_expires_a_batch_past_its_completion_window(transactional_db, batch_worker, api, diabetes):
    batch = create(api, upload(api, jsonl(10_000))["id"], completion_window="3s")
    done = wait(api, batch["id"], timeout=60)
    assert done["status"] == "expired"
    assert done["expired_at"]
    assert done["request_counts"]["completed"] < 10_000
    if done["request_counts"]["completed"]:
        assert len(json_lines(content(api, done["output_file_id"]))) == done["request_counts"]["completed"]
    assert api.post(f"/v1/batches/{batch['id']}/cancel").status_code == 409


def test_it_replays_the_same_idempotent_create_and_refuses_another_body(transactional_db, api, diabetes, monkeypatch):
    queued = []
    monkeypatch.setattr("batches.tasks.batch_validate.delay", queued.append)
    file = upload(api, jsonl(5))
    first = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"}, HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post_json(
        "/v1/batches", {"input_file_id": file["id"], "model": "diabetes"}, HTTP_IDEMPOTENCY_KEY="k-1"
    )
    other = api.post_json(
        "/v1/batches",
        {"input_file_id": file["id"], "model": "diabetes", "metadata": {"a": "b"}},
        HTTP_IDEMPOTENCY_KEY="k-1",
    )
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(queued) == 1
    fresh = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"}, HTTP_IDEMPOTENCY_KEY="k-2")
    assert fresh.status_code == 201
    assert fresh.json()["id"] != first.json()["id"]


def test_it_keeps_the_version_resolved_at_creation_when_the_alias_moves(transactional_db, batch_worker, api, diabetes):
    from models_registry.services import alias_move
    from tests.conftest import register

    batch = create(api, upload(api, jsonl(60))["id"])
    newer = register("diabetes")  # moves `production` to version 2
    assert newer.number == diabetes.number + 1
    done = wait(api, batch["id"])
    assert done["model_version"] == str(diabetes.number)
    assert set(UsageRecord.objects.filter(face="batch").values_list("model_version_id", flat=True)) == {diabetes.pk}
    del alias_move
