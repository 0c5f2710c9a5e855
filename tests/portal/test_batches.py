"""Batch jobs in the portal: start from an upload, the polled row, cancel, downloads, isolation."""

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apiservice.models import Organisation
from batches import execution, validation
from batches.models import Batch, BatchChunk, BatchPart, File
from models_registry.services import model_get_or_create, model_version_register

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def jsonl(rows: list[list[float]] = ROWS) -> bytes:
    return b"".join(json.dumps({"custom_id": f"r{i}", "instances": [r]}).encode() + b"\n" for i, r in enumerate(rows))


def start(client: Client, content: bytes = b"", name: str = "rows.jsonl", **fields: Any) -> Any:
    data = {"model": "iris", "version": "", "output_format": "jsonl", **fields}
    data["file"] = SimpleUploadedFile(name, content or jsonl())
    return client.post("/portal/batches/", data)


def run_in_process(batch: Batch) -> Batch:
    """What the Celery worker does (the browser test runs a real one): validate, chunks, finalise."""
    validation.batch_validate(batch_id=batch.pk)
    for part in BatchPart.objects.filter(batch=batch):
        validation.part_validate(part_id=part.pk)
    validation.batch_validate_finish(batch_id=batch.pk)
    for chunk in BatchChunk.objects.filter(batch=batch):
        execution.chunk_run(chunk_id=chunk.pk)
    execution.batch_finalize(batch_id=batch.pk)
    batch.refresh_from_db()
    return batch


@pytest.fixture
def other_batch(other_org: Organisation, iris: Any, other_owner: Any) -> Batch:
    from tests.portal.conftest import client_as

    assert start(client_as(other_owner)).status_code == 302
    return Batch.objects.get(organisation=other_org)


def test_it_uploads_a_file_and_starts_a_batch_without_a_key(
    member_client: Client, org: Organisation, iris: Any
) -> None:
    response = start(member_client)
    assert response.status_code == 302 and response["Location"] == "/portal/batches/"
    batch = Batch.objects.select_related("input_file").get(organisation=org)
    assert (batch.status, batch.api_key_id, batch.model_version_id) == ("validating", None, iris.pk)
    assert batch.input_file is not None and batch.input_file.filename == "rows.jsonl"
    page = member_client.get("/portal/batches/").content.decode()
    assert batch.uid in page and "started on rows.jsonl" in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": "7"}, "7"),
        ({"output_format": "csv"}, "CSV output needs a CSV input file."),
        ({"model": "secret-iris"}, "Select a valid choice."),
    ],
)
def test_it_explains_a_refused_batch_and_keeps_no_file(
    owner_client: Client, org: Organisation, iris: Any, private_model: Any, fields: dict[str, str], message: str
) -> None:
    response = start(owner_client, **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Batch.objects.exists() and not File.objects.filter(organisation=org).exists()


def test_it_refuses_an_empty_file(owner_client: Client, iris: Any) -> None:
    response = owner_client.post(
        "/portal/batches/", {"model": "iris", "output_format": "jsonl", "file": SimpleUploadedFile("e.jsonl", b" \n")}
    )
    assert response.status_code == 400
    assert "The file is empty." in response.content.decode()


def test_it_polls_a_running_batch_and_stops_when_it_is_done(owner_client: Client, org: Organisation, iris: Any) -> None:
    start(owner_client)
    batch = Batch.objects.get(organisation=org)
    row = owner_client.get(f"/portal/batches/{batch.uid}/row/", headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 1s"' in row and 'data-status="validating"' in row
    batch = run_in_process(batch)
    assert batch.status == "completed"
    row = owner_client.get(f"/portal/batches/{batch.uid}/row/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in row and 'value="100"' in row and "3 / 3 rows" in row
    assert f"/portal/files/{batch.output_file.uid}/download/" in row  # type: ignore[union-attr]


def test_it_downloads_the_output_file(owner_client: Client, org: Organisation, iris: Any) -> None:
    start(owner_client)
    batch = run_in_process(Batch.objects.get(organisation=org))
    response = owner_client.get(f"/portal/files/{batch.output_file.uid}/download/")  # type: ignore[union-attr]
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [line["custom_id"] for line in lines] == ["r0", "r1", "r2"]
    assert lines[0]["response"]["predictions"][0]["label"] == "setosa"


def test_it_cancels_a_batch_with_htmx(member_client: Client, org: Organisation, iris: Any) -> None:
    start(member_client)
    batch = Batch.objects.get(organisation=org)
    response = member_client.post(f"/portal/batches/{batch.uid}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'data-status="cancelling"' in response.content.decode()
    batch.refresh_from_db()
    assert batch.status == "cancelling"


def test_it_explains_why_a_finished_batch_cannot_be_cancelled(
    owner_client: Client, org: Organisation, iris: Any
) -> None:
    start(owner_client)
    batch = run_in_process(Batch.objects.get(organisation=org))
    response = owner_client.post(f"/portal/batches/{batch.uid}/cancel/", follow=True)
    assert "cannot be cancelled" in response.content.decode()


def test_it_hides_another_organisations_batches_and_files(owner_client: Client, other_batch: Batch) -> None:
    uid, file_uid = other_batch.uid, other_batch.input_file.uid  # type: ignore[union-attr]
    assert owner_client.get(f"/portal/batches/{uid}/row/", headers={"HX-Request": "true"}).status_code == 404
    assert owner_client.post(f"/portal/batches/{uid}/cancel/").status_code == 404
    assert owner_client.get(f"/portal/files/{file_uid}/download/").status_code == 404
    assert uid not in owner_client.get("/portal/batches/").content.decode()
    other_batch.refresh_from_db()
    assert other_batch.status == "validating"


def test_only_owners_see_the_webhook_signing_secret(owner_client, member_client, org):
    secret = org.webhook_signing_secret
    assert secret.startswith("whsec_")
    assert secret in owner_client.get("/portal/batches/").content.decode()
    assert secret not in member_client.get("/portal/batches/").content.decode()


def test_the_model_select_lists_only_catalogue_models(
    owner_client: Client, org: Organisation, iris: Any, private_model: Any
) -> None:
    failed = model_get_or_create(name="broken")
    model_version_register(model=failed, content=b"not onnx")
    model_get_or_create(name="empty", organisation_id=org.pk)
    form = owner_client.get("/portal/batches/").context["form"]
    assert [m.name for m in form.fields["model"].queryset] == ["iris"]
    refused = start(owner_client, model="broken")
    assert refused.status_code == 400
    assert "Select a valid choice." in refused.content.decode()
    assert not Batch.objects.exists() and not File.objects.filter(organisation=org).exists()


def test_it_shows_no_busy_progress_bar_for_a_batch_that_failed_before_counting_rows(
    owner_client: Client, org: Organisation, iris: Any
) -> None:
    start(owner_client, content=b"not json\n")
    batch = run_in_process(Batch.objects.get(organisation=org))
    assert (batch.status, batch.rows_total) == ("failed", 0)
    row = owner_client.get(f"/portal/batches/{batch.uid}/row/", headers={"HX-Request": "true"}).content.decode()
    # A <progress> without a value is indeterminate: browsers animate it as work going on.
    assert '<progress max="100" value="0"' in row


def test_it_keeps_the_page_with_the_webhook_secret_out_of_caches(owner_client: Client, org: Organisation) -> None:
    """Like the keys page: a page that holds a secret is never stored (back/forward cache, shared caches)."""
    response = owner_client.get("/portal/batches/")
    assert org.webhook_signing_secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_a_polled_row_that_is_gone_reloads_the_page_instead_of_polling_404s(
    owner: Any, org: Organisation, other_org: Organisation, iris: Any
) -> None:
    """E.g. the organisation was switched in another tab: the stale page reloads (HX-Refresh), still a 404."""
    from apiservice.services import membership_ensure
    from tests.portal.conftest import client_as

    client = client_as(owner)
    start(client)
    batch = Batch.objects.get(organisation=org)
    membership_ensure(user=owner, organisation=other_org, role="owner")
    client.post("/portal/organisation/switch/", {"organisation": other_org.pk})
    response = client.get(f"/portal/batches/{batch.uid}/row/", headers={"HX-Request": "true"})
    assert (response.status_code, response.get("HX-Refresh")) == (404, "true")
    assert client.get(f"/portal/batches/{batch.uid}/row/").get("HX-Refresh") is None  # not htmx: a plain 404
