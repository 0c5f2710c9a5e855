"""Billing fixtures: fresh per-process billing caches, plan helpers and the local Stripe server."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from apiservice.models import Organisation
from billing import limits
from billing.models import BillingAccount, KeyLimit, Plan, PlanPrice
from tests.billing.stripe_server import StripeServer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
WEBHOOK_SECRET = "whsec_test_modelmeter"


@pytest.fixture(autouse=True)
def _fresh_billing_caches() -> Iterator[None]:
    limits.entitlement_cache.clear()
    limits.link.reset()
    yield
    limits.entitlement_cache.clear()
    limits.link.reset()


def account_on(organisation: Organisation, plan_code: str, **fields: Any) -> BillingAccount:
    account, _ = BillingAccount.objects.update_or_create(
        organisation=organisation, defaults={"plan": Plan.objects.get(code=plan_code), **fields}
    )
    limits.entitlement_cache.clear()
    return account


def free_quota(meter: str, units: int) -> None:
    PlanPrice.objects.filter(plan__code="free", meter=meter).update(included_units=units)
    limits.entitlement_cache.clear()


def key_limit(api_key: str, **fields: Any) -> KeyLimit:
    from apiservice.models import APIKey

    row, _ = KeyLimit.objects.update_or_create(api_key=APIKey.objects.get_from_key(api_key), defaults=fields)
    limits.entitlement_cache.clear()
    return row


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StripeServer]:
    server = StripeServer(webhook_secret=WEBHOOK_SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stripe(stripe_server: StripeServer) -> Iterator[StripeServer]:
    """Billing configured against the local Stripe-compatible server (state reset per test)."""
    stripe_server.reset()
    with override_settings(
        STRIPE_SECRET_KEY="sk_test_local",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=stripe_server.url,
        STRIPE_MAX_NETWORK_RETRIES=0,
    ):
        yield stripe_server
