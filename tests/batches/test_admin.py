"""Staff read batches and files in the admin; only the API and the workers change them."""

from typing import Any

from django.test import Client

from batches.models import Batch, File

from .conftest import create, jsonl, upload


def _batch(api: Any) -> Batch:
    return Batch.objects.get(uid=create(api, upload(api, jsonl(2))["id"])["id"])


def test_staff_see_a_batch_and_its_file_in_the_admin(admin_client: Client, api, diabetes, no_queue) -> None:
    batch = _batch(api)
    assert admin_client.get(f"/admin/batches/batch/{batch.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/batches/file/{batch.input_file_id}/change/").status_code == 200
    assert admin_client.get("/admin/batches/batch/").status_code == 200


def test_a_save_from_the_admin_cannot_rewrite_a_running_batch(admin_client: Client, api, diabetes, no_queue) -> None:
    batch = _batch(api)
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.IN_PROGRESS, completed=7)
    response = admin_client.post(
        f"/admin/batches/batch/{batch.pk}/change/",
        {"status": "completed", "completed": "0", "organisation": batch.organisation_id},
    )
    assert response.status_code == 403
    batch.refresh_from_db()
    assert (batch.status, batch.completed) == (Batch.Status.IN_PROGRESS, 7)


def test_staff_cannot_add_batches_or_hand_a_file_to_another_organisation(
    admin_client: Client, api, diabetes, no_queue, other_org
) -> None:
    file = File.objects.get(pk=_batch(api).input_file_id)
    assert admin_client.get("/admin/batches/batch/add/").status_code == 403
    response = admin_client.post(
        f"/admin/batches/file/{file.pk}/change/",
        {"organisation": other_org.pk, "filename": file.filename, "purpose": file.purpose, "format": file.format},
    )
    assert response.status_code == 403
    assert File.objects.get(pk=file.pk).organisation_id == file.organisation_id
