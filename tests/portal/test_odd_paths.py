"""Ids in page URLs come from the address bar: one PostgreSQL cannot store (NUL) is a 404, never a 500."""

import pytest
from django.test import Client


@pytest.mark.parametrize(
    "path",
    [
        "/portal/batches/%00/row/",
        "/portal/files/%00/download/",
        "/portal/bundles/%00/row/",
        "/portal/models/%00/",
        "/portal/invitations/%00/",
    ],
)
def test_a_customer_page_for_an_id_holding_a_nul_byte_is_a_404(owner_client: Client, path: str) -> None:
    assert owner_client.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/staff/models/%00/", "/staff/models/%00/versions/1/"])
def test_a_staff_page_for_a_name_holding_a_nul_byte_is_a_404(staff_client: Client, path: str) -> None:
    assert staff_client.get(path).status_code == 404
