import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from billing import limits, tasks
from billing.models import Plan
from tests.billing.conftest import seed_catalog

pytestmark = pytest.mark.usefixtures("default_free_plan")


def test_it_refuses_to_sync_the_catalogue_without_stripe_keys(db):
    with pytest.raises(CommandError, match="not configured"):
        call_command("sync_stripe_catalog", stdout=io.StringIO())


@pytest.mark.parametrize("command", ["push_usage", "reconcile_usage"])
def test_it_says_billing_is_not_configured_when_staff_push_or_reconcile_by_hand(db, command):
    """`push_usage` answered 'nothing to do' on a server without Stripe keys, whatever usage was waiting."""
    with pytest.raises(CommandError, match="not configured"):
        call_command(command, stdout=io.StringIO())


def test_it_does_nothing_in_the_beat_tasks_without_stripe_keys(db):
    assert tasks.usage_push() == {}
    assert tasks.usage_reconcile() == 0
    assert tasks.idempotency_purge() == 0


def test_it_seeds_three_plans_and_restores_them_if_wiped(db):
    free = limits.entitlement_get(organisation_id=0)  # re-seeds after a flushed (transactional) test
    assert set(Plan.objects.values_list("code", flat=True)) >= {"free", "payg", "enterprise"}
    assert (free.plan_code, free.caps["online_predictions"]) == ("free", 1000)


@pytest.mark.parametrize(
    "page", ["plan", "billingaccount", "keylimit", "usagereport", "reconciliationissue", "stripeevent", "billingmeter"]
)
def test_it_shows_billing_to_staff_in_the_admin(staff_user, page):
    seed_catalog()
    client = Client()
    client.force_login(staff_user)
    staff_user.is_superuser = True
    staff_user.save()
    assert client.get(f"/admin/billing/{page}/").status_code == 200


def test_it_lets_staff_edit_a_plan(staff_user):
    seed_catalog()
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    plan = Plan.objects.get(code="free")
    assert client.get(f"/admin/billing/plan/{plan.pk}/change/").status_code == 200


def test_it_offers_no_add_for_reconciliation_issues_in_the_admin(admin_client, org):
    """Reconciliation finds them; an issue added by hand had every field read-only (a 500, no organisation)."""
    from billing.models import ReconciliationIssue

    assert admin_client.get("/admin/billing/reconciliationissue/add/").status_code == 403
    assert admin_client.post("/admin/billing/reconciliationissue/add/", {}).status_code == 403
    assert not ReconciliationIssue.objects.exists()
    listing = admin_client.get("/admin/billing/reconciliationissue/").content.decode()
    assert "/admin/billing/reconciliationissue/add/" not in listing


def _plan_change_form(plan: Plan, **fields: str) -> dict[str, str]:
    prices = list(plan.prices.order_by("pk"))
    data = {
        "code": plan.code,
        "name": plan.name,
        "rate_limit": plan.rate_limit,
        "currency": plan.currency,
        "prices-TOTAL_FORMS": str(len(prices)),
        "prices-INITIAL_FORMS": str(len(prices)),
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
        **({"hard_cap": "on"} if plan.hard_cap else {}),
        **({"self_serve": "on"} if plan.self_serve else {}),
    }
    for i, price in enumerate(prices):
        data |= {
            f"prices-{i}-id": str(price.pk),
            f"prices-{i}-plan": str(plan.pk),
            f"prices-{i}-meter": price.meter,
            f"prices-{i}-included_units": "" if price.included_units is None else str(price.included_units),
            f"prices-{i}-unit_amount_decimal": str(price.unit_amount_decimal),
        }
    return data | fields


@pytest.mark.parametrize("rate_limit", ["1200 per min", "sixty/minute", "10/second;100/minute", ""])
def test_it_refuses_a_plan_rate_limit_the_gateway_cannot_read(admin_client, api, org, rate_limit):
    """A mistyped rate limit was saved, and every call of every organisation on the plan was a 500."""
    seed_catalog()
    plan = Plan.objects.get(code="free")
    response = admin_client.post(
        f"/admin/billing/plan/{plan.pk}/change/", _plan_change_form(plan, rate_limit=rate_limit)
    )
    assert response.status_code == 200  # the form again, with the error; not a redirect
    assert "rate_limit" in response.context["adminform"].form.errors
    plan.refresh_from_db()
    assert plan.rate_limit == "60/minute"
    limits.entitlement_cache.clear()
    assert api.get("/v1/usage").status_code == 200


def test_it_saves_a_plan_rate_limit_in_the_limits_notation(admin_client):
    seed_catalog()
    plan = Plan.objects.get(code="free")
    response = admin_client.post(
        f"/admin/billing/plan/{plan.pk}/change/", _plan_change_form(plan, rate_limit="2 per second")
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    plan.refresh_from_db()
    assert plan.rate_limit == "2 per second"


def test_it_refuses_a_key_rate_limit_override_the_gateway_cannot_read(admin_client, api, org, api_key):
    from apiservice.models import APIKey

    key = APIKey.objects.get_from_key(api_key)
    response = admin_client.post(
        "/admin/billing/keylimit/add/", {"api_key": key.pk, "rate_limit": "ten/second", "monthly_budget_units": ""}
    )
    assert response.status_code == 200
    assert "rate_limit" in response.context["adminform"].form.errors
    assert api.get("/v1/usage").status_code == 200


@pytest.mark.parametrize(
    ("fields", "errors_in"),
    [
        ({"currency": "USD"}, "currency"),  # Stripe answers "usd": every sync replaced every price
        ({"currency": "dollars"}, "currency"),
        ({"prices-0-unit_amount_decimal": "-0.05"}, "prices"),  # a negative price: a credit per call
    ],
)
def test_it_refuses_plan_terms_stripe_cannot_bill(admin_client, fields, errors_in):
    seed_catalog()
    plan = Plan.objects.get(code="payg")
    before = list(plan.prices.order_by("pk").values_list("unit_amount_decimal", flat=True))
    response = admin_client.post(f"/admin/billing/plan/{plan.pk}/change/", _plan_change_form(plan, **fields))
    assert response.status_code == 200
    if errors_in == "currency":
        assert "currency" in response.context["adminform"].form.errors
    else:
        assert any(form.errors for formset in response.context["inline_admin_formsets"] for form in formset.formset)
    plan.refresh_from_db()
    assert plan.currency == "usd"
    assert list(plan.prices.order_by("pk").values_list("unit_amount_decimal", flat=True)) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"prices-0-included_units": "1000"},  # on payg, self-serve
        {"code": "free", "self_serve": "on"},  # free's included units, now sold through Checkout
    ],
)
def test_it_refuses_included_units_on_a_plan_stripe_bills_from_the_first_unit(admin_client, fields):
    """Stripe's prices bill every unit: included units on a Checkout plan showed in the estimate as free
    and were invoiced all the same."""
    seed_catalog()
    plan = Plan.objects.get(code=fields.get("code", "payg"))
    response = admin_client.post(f"/admin/billing/plan/{plan.pk}/change/", _plan_change_form(plan, **fields))
    assert response.status_code == 200
    errors = [str(formset.formset.non_form_errors()) for formset in response.context["inline_admin_formsets"]]
    assert any("included" in error for error in errors), errors
    assert Plan.objects.get(pk=plan.pk).self_serve == plan.self_serve
    assert list(Plan.objects.get(pk=plan.pk).prices.values_list("included_units", flat=True)) == list(
        plan.prices.values_list("included_units", flat=True)
    )


def _account_change_form(account, **fields):
    return {
        "organisation": str(account.organisation_id),
        "plan": str(account.plan_id),
        "status": account.status,
        "past_due_since_0": "",
        "past_due_since_1": "",
        "metered_since_0": "",
        "metered_since_1": "",
        **fields,
    }


def test_it_refuses_a_plan_change_in_the_admin_for_an_organisation_stripe_bills(admin_client, org):
    """The plan came back from Stripe with the next subscription event: the deal staff set silently reverted,
    after a month of estimates and limits that Stripe's invoice did not follow."""
    from tests.billing.conftest import account_on

    account = account_on(org, "payg", stripe_subscription_id="sub_live", subscription_status="active")
    enterprise = Plan.objects.get(code="enterprise")
    response = admin_client.post(
        f"/admin/billing/billingaccount/{account.pk}/change/", _account_change_form(account, plan=str(enterprise.pk))
    )
    assert response.status_code == 200
    assert "plan" in response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.plan.code == "payg"


def test_it_lets_staff_set_a_plan_for_an_organisation_without_a_subscription(admin_client, org):
    from tests.billing.conftest import account_on

    account = account_on(org, "free")
    enterprise = Plan.objects.get(code="enterprise")
    response = admin_client.post(
        f"/admin/billing/billingaccount/{account.pk}/change/", _account_change_form(account, plan=str(enterprise.pk))
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.plan.code == "enterprise"


def test_the_daily_reconciliation_runs_even_when_beat_restarts_more_often_than_daily(settings):
    """A 24-hour interval counts from beat's start: with a deploy every 12 hours (and a fresh schedule file,
    as on any ephemeral disk) reconciliation never ran."""
    import copy
    from datetime import UTC, datetime, timedelta

    from celery.schedules import schedule as interval

    entry = settings.CELERY_BEAT_SCHEDULE["billing-reconcile"]["schedule"]
    every = copy.copy(entry) if hasattr(entry, "is_due") else interval(timedelta(seconds=float(entry)))
    runs = 0
    for deploy in range(6):  # three days, a restart every 12 hours
        boot = datetime(2026, 11, 1, 9, 30, tzinfo=UTC) + timedelta(hours=12 * deploy)
        last_run = boot  # what beat assumes for an entry its schedule file does not know
        for minute in range(0, 12 * 60, 5):
            now = boot + timedelta(minutes=minute)
            every.nowfun = lambda now=now: now
            due, _ = every.is_due(last_run)
            if due:
                runs, last_run = runs + 1, now
    assert runs >= 3


def test_a_database_check_names_a_stored_rate_limit_the_gateway_cannot_read(db, api_key):
    """A rate limit saved before the admin checked it still made every call on the plan a 500; `migrate`
    (which runs the database checks) now names it."""
    from django.core.checks import run_checks

    from tests.billing.conftest import key_limit

    seed_catalog()
    assert "apiservice.W004" not in [m.id for m in run_checks(databases=["default"])]
    Plan.objects.filter(code="payg").update(rate_limit="1200 per min")
    key_limit(api_key, rate_limit="ten/second")
    messages = [m for m in run_checks(databases=["default"]) if m.id == "apiservice.W004"]
    assert len(messages) == 2
    assert "payg" in messages[0].msg + messages[1].msg


def test_a_database_check_says_the_default_plan_does_not_exist(db, settings):
    """BILLING_DEFAULT_PLAN=pro (no such plan) made every call of an organisation without a billing
    account a 500."""
    from django.core.checks import run_checks

    seed_catalog()
    assert "apiservice.W005" not in [m.id for m in run_checks(databases=["default"])]
    settings.BILLING_DEFAULT_PLAN = "pro"
    assert "apiservice.W005" in [m.id for m in run_checks(databases=["default"])]
