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
