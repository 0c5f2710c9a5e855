"""Billing fixtures: fresh per-process billing caches, plan helpers and the local Stripe server."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from apiservice.models import Organisation
from billing import catalog, limits
from billing.models import BillingAccount, BillingMeter, KeyLimit, Plan, PlanPrice
from tests.billing.stripe_server import StripeServer

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
WEBHOOK_SECRET = "whsec_test_modelmeter"


def _forget_billing_counters() -> None:
    """Flushed test databases reuse ids, so drop billing's Redis keys (only ours: `mm:*`)."""
    client = limits.link.client()
    if client is not None:
        keys = list(client.scan_iter(match="mm:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_billing_caches() -> Iterator[None]:
    limits.entitlement_cache.clear()
    limits.link.reset()
    _forget_billing_counters()
    yield
    limits.entitlement_cache.clear()
    limits.link.reset()


def seed_catalog() -> None:
    """Transactional tests flush the tables (seeded plans included); put the seed back."""
    catalog.seed(Plan, PlanPrice, BillingMeter)


def account_on(organisation: Organisation, plan_code: str, **fields: Any) -> BillingAccount:
    seed_catalog()
    account, _ = BillingAccount.objects.update_or_create(
        organisation=organisation, defaults={"plan": Plan.objects.get(code=plan_code), **fields}
    )
    limits.entitlement_cache.clear()
    return account


def free_quota(meter: str, units: int) -> None:
    seed_catalog()
    PlanPrice.objects.filter(plan__code="free", meter=meter).update(included_units=units)
    limits.entitlement_cache.clear()


def key_limit(api_key: str, **fields: Any) -> KeyLimit:
    from apiservice.models import APIKey

    row, _ = KeyLimit.objects.update_or_create(api_key=APIKey.objects.get_from_key(api_key), defaults=fields)
    limits.entitlement_cache.clear()
    return row


@pytest.fixture
def default_free_plan(settings: Any) -> None:
    """Organisations without a billing account are on `free` (the product default; tests use enterprise)."""
    settings.BILLING_DEFAULT_PLAN = "free"
    limits.entitlement_cache.clear()


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
