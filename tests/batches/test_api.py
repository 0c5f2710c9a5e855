"""The /v1/files and /v1/batches routes in-process: contracts, scope, and tenant isolation."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apiservice import services as org_services
from models_registry.models import ModelAlias
from models_registry.services import model_version_register
from tests.billing.conftest import IRIS_ROW
from tests.conftest import APIClient

from .conftest import content, create, jsonl, upload


def test_it_uploads_lists_reads_and_deletes_a_file(api, no_queue):
    file = upload(api, jsonl(3), "rows.jsonl")
    assert file["object"] == "file"
    assert file["purpose"] == "batch"
    assert file["bytes"] == len(jsonl(3))
    assert file["id"].startswith("file-")
    assert api.get(f"/v1/files/{file['id']}").json() == file
    assert [f["id"] for f in api.get("/v1/files").json()["results"]] == [file["id"]]
    assert content(api, file["id"]) == jsonl(3)
    deleted = api.delete(f"/v1/files/{file['id']}")
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert api.get(f"/v1/files/{file['id']}").status_code == 404


def test_it_refuses_other_purposes_and_missing_files(api):
    wrong = api.post("/v1/files", {"file": SimpleUploadedFile("a.jsonl", b"{}\n"), "purpose": "fine-tune"})
    assert wrong.status_code == 400
    missing = api.post("/v1/files", {"purpose": "batch"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "file"


def test_it_refuses_an_upload_carrying_two_files(api):
    """The last of them was stored and the others dropped, with a 201 for the one file."""
    files = [SimpleUploadedFile("a.jsonl", jsonl(1)), SimpleUploadedFile("b.jsonl", jsonl(2))]
    response = api.post("/v1/files", {"file": files, "purpose": "batch"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert "one file per upload" in response.json()["error"]["message"]
    assert api.get("/v1/files").json()["results"] == []


def test_it_creates_a_batch_resolving_the_version_once(api, diabetes, no_queue, django_capture_on_commit_callbacks):
    file = upload(api, jsonl(3))
    with django_capture_on_commit_callbacks(execute=True):
        batch = create(api, file["id"], alias="production", metadata={"k": "v"}, completion_window="24h")
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["model_version"] == str(diabetes.number)
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["expires_at"] - batch["created_at"] == 24 * 3600
    assert len(no_queue) == 1
    assert [b["id"] for b in api.get("/v1/batches").json()["results"]] == [batch["id"]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "nope"}, 404, "model_not_found"),
        ({"version": "9"}, 404, "version_not_found"),
        ({"version": "²"}, 404, "version_not_found"),  # str.isdigit() says yes, int() refused it: a 500
        ({"version": "\u0661"}, 404, "version_not_found"),  # an Arabic-Indic 1 named version 1
        ({"version": "1", "alias": "production"}, 400, "invalid_input"),
        ({"completion_window": "soon"}, 400, "invalid_input"),
        ({"completion_window": "30d"}, 400, "invalid_input"),
        ({"output_format": "csv"}, 400, "invalid_input"),
        ({"input_file_id": "file-missing"}, 404, "file_not_found"),
        ({"output_format": "xml"}, 400, "invalid_request"),
    ],
)
def test_it_refuses_bad_batch_requests(api, diabetes, no_queue, body, status, code):
    file = upload(api, jsonl(2))
    response = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes", **body})
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"alias": "ghost"}, 404, "version_not_found", "alias"),
        ({"alias": "production"}, 409, "version_not_ready", "alias"),  # moved below to a failed version
        ({"version": 99}, 404, "version_not_found", "version"),
        ({"version": "2"}, 409, "version_not_ready", "version"),
    ],
    ids=["unknown-alias", "alias-on-a-failed-version", "unknown-version", "failed-version"],
)
def test_it_names_the_version_or_alias_the_client_sent_when_it_cannot_be_used(
    api, diabetes, no_queue, body, status, code, param
):
    failed = model_version_register(model=diabetes.model, content=b"garbage")
    ModelAlias.objects.filter(model=diabetes.model, name="production").update(version=failed)
    file = upload(api, jsonl(2))
    response = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes", **body})
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


def test_it_lists_batches_newest_first_with_a_cursor(api, diabetes, no_queue):
    file = upload(api, jsonl(2))
    ids = [create(api, file["id"])["id"] for _ in range(3)]
    page = api.get("/v1/batches?limit=2").json()
    assert [b["id"] for b in page["results"]] == ids[::-1][:2]
    rest = api.get(page["next"]).json()
    assert [b["id"] for b in rest["results"]] == ids[:1]


def test_it_cancels_a_validating_batch(api, diabetes, no_queue):
    batch = create(api, upload(api, jsonl(2))["id"])
    response = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelling"


@pytest.mark.parametrize(
    ("state", "said"),
    [
        ({"status": "completed"}, "completed"),
        ({"status": "in_progress", "expired_at": "now"}, "expiring"),  # expired, not finalised yet
        ({"status": "in_progress", "failed_at": "now"}, "failing"),
    ],
)
def test_it_refuses_to_cancel_a_batch_that_is_ending_and_says_why(api, diabetes, no_queue, state, said):
    """An expired or failed batch not finalised yet is still `in_progress`: "a batch that is in_progress
    cannot be cancelled" contradicted the docs (an in_progress batch can be)."""
    from django.utils import timezone

    from batches.models import Batch

    batch = create(api, upload(api, jsonl(2))["id"])
    Batch.objects.filter(uid=batch["id"]).update(**{k: timezone.now() if v == "now" else v for k, v in state.items()})
    response = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "batch_not_cancellable"
    assert response.json()["error"]["message"] == f"A batch that is {said} cannot be cancelled."


def test_it_needs_the_batch_scope(org, diabetes):
    _, key = org_services.api_key_create(organisation=org, name="predict only", scopes=["predict"])
    client = APIClient(key)
    for response in (client.get("/v1/files"), client.get("/v1/batches"), client.post_json("/v1/batches", {})):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert APIClient().get("/v1/batches").status_code == 401


def test_it_keeps_files_and_batches_private_to_their_organisation(api, other_key, diabetes, private_model, no_queue):
    file = upload(api, jsonl(2))
    batch = create(api, file["id"])
    other = APIClient(other_key)
    routes = [
        ("get", f"/v1/files/{file['id']}"),
        ("get", f"/v1/files/{file['id']}/content"),
        ("delete", f"/v1/files/{file['id']}"),
        ("get", f"/v1/batches/{batch['id']}"),
        ("post", f"/v1/batches/{batch['id']}/cancel"),
    ]
    for method, path in routes:
        response = getattr(other, method)(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
    assert other.get("/v1/files").json()["results"] == []
    assert other.get("/v1/batches").json()["results"] == []
    stolen = other.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes"})
    assert stolen.status_code == 404
    assert stolen.json()["error"]["code"] == "file_not_found"
    private = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": private_model.model.name})
    assert private.status_code == 404
    assert private.json()["error"]["code"] == "model_not_found"
    assert api.get(f"/v1/batches/{batch['id']}").json()["status"] == "validating"


def test_it_refuses_to_delete_a_file_a_running_batch_reads(api, diabetes, no_queue):
    file = upload(api, jsonl(2))
    create(api, file["id"])
    response = api.delete(f"/v1/files/{file['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "file_in_use"


@pytest.mark.parametrize("chunk", [4096, 1024 * 1024])
def test_it_parses_uploads_in_chunks_of_the_setting_byte_for_byte(api, no_queue, settings, monkeypatch, chunk):
    from apiservice.uploadhandlers import TemporaryUploadHandler

    settings.FILE_UPLOAD_CHUNK_BYTES = chunk
    sizes: list[int] = []
    receive = TemporaryUploadHandler.receive_data_chunk

    def spy(self, raw_data, start):
        sizes.append(len(raw_data))
        return receive(self, raw_data, start)

    monkeypatch.setattr(TemporaryUploadHandler, "receive_data_chunk", spy)
    data = jsonl(30_000)  # ~4 MB: over FILE_UPLOAD_MAX_MEMORY_SIZE, so streamed to a temporary file
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    file = upload(api, data)
    assert max(sizes) == chunk and sum(sizes) == len(data)
    assert file["bytes"] == len(data)
    assert content(api, file["id"]) == data


@pytest.mark.parametrize("stop", ["failed", "expired"])
def test_it_shows_a_terminal_timestamp_only_with_its_status(api, diabetes, no_queue, stop):
    """Validation failed (or the window ended) but the files are not written yet: still `validating`,
    and nothing in the object may say otherwise (a client polling for `failed_at` finds no error file)."""
    from django.utils import timezone

    from batches import execution
    from batches.models import Batch

    batch = create(api, upload(api, jsonl(2))["id"])
    record = Batch.objects.get(uid=batch["id"])
    if stop == "failed":
        execution.batch_fail(batch=record, errors=[{"code": "empty_file", "message": "No lines.", "line": None}])
    else:
        Batch.objects.filter(pk=record.pk).update(expires_at=timezone.now())
        execution.batch_expire_if_due(batch=Batch.objects.get(pk=record.pk))
    shown = api.get(f"/v1/batches/{batch['id']}").json()
    assert shown["status"] == "validating"
    assert (shown["failed_at"], shown["expired_at"]) == (None, None)


def test_it_finalises_a_batch_cancelled_while_validating_at_once(
    api, diabetes, no_queue, monkeypatch, django_capture_on_commit_callbacks
):
    """No part or chunk is running to finish it: without a finalisation queued now, the batch stayed
    `cancelling` until the next sweep (30-60 s)."""
    finalised: list[int] = []
    monkeypatch.setattr("batches.tasks.batch_finalize.delay", finalised.append)
    batch = create(api, upload(api, jsonl(2))["id"])
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert response.json()["status"] == "cancelling"
    assert len(finalised) == 1


def test_it_checks_and_marks_idempotency_keys_as_online_calls_do(api, diabetes, no_queue):
    """Same rules and answers as `:predict`: 1-255 printable characters, and a replay says it is one."""
    body = {"input_file_id": upload(api, jsonl(2))["id"], "model": "diabetes"}
    for bad in ("", "k" * 256, "tab\there"):
        refused = api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY=bad)
        assert refused.status_code == 400, bad
        assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
            "invalid_idempotency_key",
            "Idempotency-Key",
        )
    first = api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY="nightly-1")
    again = api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY="nightly-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_an_idempotency_key_used_for_a_batch_is_refused_on_an_online_call_and_the_call_is_not_billed(
    api, diabetes, iris, no_queue
):
    """Keys are one space per organisation, as Stripe's are: the batch's key was free for `:predict`."""
    from billing.models import UsageRecord

    body = {"input_file_id": upload(api, jsonl(2))["id"], "model": "diabetes"}
    assert api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY="order-7").status_code == 201
    online = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}, HTTP_IDEMPOTENCY_KEY="order-7")
    assert online.status_code == 422, online.content
    assert online.json()["error"]["code"] == "idempotency_key_reused"
    assert not UsageRecord.objects.filter(face="v1-predict", units__gt=0).exists()


def test_an_idempotency_key_used_on_an_online_call_is_refused_for_a_batch_and_no_batch_is_made(
    api, diabetes, iris, no_queue
):
    from batches.models import Batch

    online = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}, HTTP_IDEMPOTENCY_KEY="order-8")
    assert online.status_code == 200
    body = {"input_file_id": upload(api, jsonl(2))["id"], "model": "diabetes"}
    refused = api.post_json("/v1/batches", body, HTTP_IDEMPOTENCY_KEY="order-8")
    assert refused.status_code == 422, refused.content
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
        "idempotency_key_reused",
        "Idempotency-Key",
    )
    assert not Batch.objects.exists()
    replayed = api.post_json("/v1/models/iris:predict", {"instances": [IRIS_ROW]}, HTTP_IDEMPOTENCY_KEY="order-8")
    assert replayed["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "metadata",
    [{"run": 1}, {"ok": True}, {"nested": {"a": "b"}}, {"k" * 65: "v"}, {"jo\x00b": "v"}],
    ids=["number", "boolean", "object", "long-key", "nul-in-key"],
)
def test_it_refuses_metadata_it_could_not_return_as_given(api, diabetes, no_queue, metadata):
    """Numbers and booleans were stored as strings ("1", "True"): the batch did not return what was sent."""
    file = upload(api, jsonl(2))
    response = api.post_json("/v1/batches", {"input_file_id": file["id"], "model": "diabetes", "metadata": metadata})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"].startswith("metadata")


def test_it_gives_no_eta_for_a_batch_that_has_expired_but_is_not_finalised(api, diabetes, no_queue):
    """Expired while in progress: no chunk will run, yet eta_seconds still counted down."""
    from datetime import timedelta

    from django.utils import timezone

    from batches.models import Batch

    batch = create(api, upload(api, jsonl(2))["id"])
    started = timezone.now() - timedelta(seconds=10)
    Batch.objects.filter(uid=batch["id"]).update(
        status=Batch.Status.IN_PROGRESS, in_progress_at=started, rows_total=100, rows_done=50, chunks_total=2
    )
    assert api.get(f"/v1/batches/{batch['id']}").json()["progress"]["eta_seconds"] > 0  # running: an estimate
    Batch.objects.filter(uid=batch["id"]).update(expired_at=timezone.now())
    shown = api.get(f"/v1/batches/{batch['id']}").json()
    assert shown["status"] == "in_progress"  # until finalisation has written its files
    assert shown["progress"]["eta_seconds"] is None
