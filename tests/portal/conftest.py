"""Portal cast: an owner and a member of `org`, an owner of `other_org`, and logged-in clients."""

import uuid
from datetime import datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apiservice.models import APIKey, Membership, Organisation
from apiservice.services import membership_ensure
from billing.models import UsageRecord
from models_registry.models import ModelVersion


def record_calls(
    organisation: Organisation,
    version: ModelVersion,
    times: int = 1,
    *,
    api_key: APIKey | None = None,
    units: int = 1,
    created_at: datetime | None = None,
    client_request_id: str = "",
) -> list[str]:
    """`times` successful `:predict` calls in the usage ledger; their request ids."""
    ids = []
    for _ in range(times):
        ids.append("req_" + uuid.uuid4().hex)
        UsageRecord.objects.create(
            request_id=ids[-1],
            client_request_id=client_request_id,
            organisation=organisation,
            api_key=api_key,
            face="v1-predict",
            meter="online_predictions",
            model_version=version,
            units=units,
            status_code=200,
            latency_ms=5.0,
            created_at=created_at or timezone.now(),
        )
    return ids


def make_user(
    username: str, organisation: Organisation | None, role: str = Membership.Role.MEMBER, **extra: Any
) -> Any:
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw-Secret-123", **extra)
    if organisation is not None:
        membership_ensure(user=user, organisation=organisation, role=role)
    return user


@pytest.fixture
def owner(org: Organisation) -> Any:
    return make_user("olivia", org, Membership.Role.OWNER)


@pytest.fixture
def member(org: Organisation) -> Any:
    return make_user("mike", org, Membership.Role.MEMBER)


@pytest.fixture
def other_owner(other_org: Organisation) -> Any:
    return make_user("gary", other_org, Membership.Role.OWNER)


def client_as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner: Any) -> Client:
    return client_as(owner)


@pytest.fixture
def member_client(member: Any) -> Client:
    return client_as(member)


@pytest.fixture
def staff_client(staff_user: Any) -> Client:
    return client_as(staff_user)
