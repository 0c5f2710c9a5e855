import json

import pytest
from django.core.management import call_command

from billing import payments
from billing.models import BillingAccount, StripeEvent
from tests import live
from tests.billing.conftest import WEBHOOK_SECRET, seed_catalog

pytestmark = pytest.mark.live


def test_it_takes_signed_deliveries_from_stripe_over_http(transactional_db, tmp_path, stripe, org):
    import io

    seed_catalog()
    call_command("sync_stripe_catalog", stdout=io.StringIO())
    session = payments.checkout_start(
        organisation_id=org.pk, plan_code="payg", success_url="https://x.test/ok", cancel_url="https://x.test/no"
    )
    completed = stripe.complete_checkout(session["id"])
    event = stripe.event("checkout.session.completed", completed)
    env = {"STRIPE_SECRET_KEY": "sk_test_local", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": stripe.url}
    with live.gunicorn(tmp_path, **env) as server:
        url = server.url + "/v1/billing/webhook"
        assert stripe.deliver(url, event) == (200, b'{"outcome":"subscription active"}')
        assert stripe.deliver(url, event)[0] == 200
        status, body = stripe.deliver(url, event, secret="whsec_forged")
        assert status == 400
        assert json.loads(body)["error"]["code"] == "invalid_signature"
    account = BillingAccount.objects.get(organisation=org)
    assert (account.plan.code, account.status) == ("payg", "active")
    assert StripeEvent.objects.get().outcome == "subscription active"
