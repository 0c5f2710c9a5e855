"""Portal cast: an owner and a member of `org`, an owner of `other_org`, and logged-in clients."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apiservice.models import Membership, Organisation
from apiservice.services import membership_ensure


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
