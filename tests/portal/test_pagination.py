"""Long lists in the portal page instead of hiding what is past their first 50 rows."""

from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from apiservice.models import Organisation
from batches.models import Batch
from edge.models import Bundle


def _batches(org: Organisation, version: Any, count: int) -> list[str]:
    """`count` finished batches, oldest first; their ids."""
    expires = timezone.now() + timedelta(days=1)
    made = Batch.objects.bulk_create(
        Batch(organisation=org, model_version=version, status=Batch.Status.COMPLETED, expires_at=expires)
        for _ in range(count)
    )
    return [b.uid for b in made]


def test_it_pages_the_batch_jobs_so_the_oldest_stay_reachable(
    owner_client: Client, org: Organisation, iris: Any
) -> None:
    uids = _batches(org, iris, 51)
    first = owner_client.get("/portal/batches/")
    assert [b.uid for b in first.context["batches"]] == uids[:0:-1]  # the 50 newest
    assert 'href="?page=2"' in first.content.decode()
    assert "Page 1 of 2" in first.content.decode()
    second = owner_client.get("/portal/batches/", {"page": 2})
    assert [b.uid for b in second.context["batches"]] == uids[:1]
    assert 'href="?page=1"' in second.content.decode()


def test_a_page_number_out_of_range_shows_a_page_that_exists(
    owner_client: Client, org: Organisation, iris: Any
) -> None:
    uids = _batches(org, iris, 51)
    assert [b.uid for b in owner_client.get("/portal/batches/", {"page": 99}).context["batches"]] == uids[:1]
    assert len(owner_client.get("/portal/batches/", {"page": "x"}).context["batches"]) == 50


def test_a_short_list_has_no_pager(owner_client: Client, org: Organisation, iris: Any) -> None:
    _batches(org, iris, 3)
    assert "Page 1 of" not in owner_client.get("/portal/batches/").content.decode()


def test_it_pages_the_bundles_so_the_oldest_stay_reachable(owner_client: Client, iris: Any) -> None:
    made = Bundle.objects.bulk_create(
        Bundle(model_version=iris, variants_key=f"fp32-{i}", status=Bundle.Status.READY) for i in range(51)
    )
    first = owner_client.get("/portal/bundles/")
    assert [b.public_id for b in first.context["bundles"]] == [b.public_id for b in made[:0:-1]]
    assert 'href="?page=2"' in first.content.decode()
    second = owner_client.get("/portal/bundles/", {"page": 2})
    assert [b.public_id for b in second.context["bundles"]] == [made[0].public_id]
