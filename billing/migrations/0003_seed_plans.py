"""Seed the three plans and the three meters. Staff change prices and limits in the admin afterwards."""

from django.db import migrations


def seed(apps, schema_editor):
    from billing.catalog import seed as catalog_seed

    catalog_seed(apps.get_model("billing", "Plan"), apps.get_model("billing", "PlanPrice"),
                 apps.get_model("billing", "BillingMeter"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_plans_stripe_outbox")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
