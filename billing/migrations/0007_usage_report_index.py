"""The ledger's index on `report_id`, for reported rows only, built without blocking the ledger's writes.

The ledger is the largest table and every API call writes to it: a plain CREATE INDEX would hold off
those INSERTs for as long as it scans the table. On PostgreSQL the index is built CONCURRENTLY (outside
a transaction, hence `atomic = False`); elsewhere it is an ordinary index. 0008 then drops the old
`report_id` indexes, which this one replaces.
"""

from django.db import migrations, models

INDEX = models.Index(fields=["report"], name="usage_report", condition=models.Q(report__isnull=False))


def create_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    model = apps.get_model("billing", "UsageRecord")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "usage_report" ON "billing_usagerecord" ("report_id") '
            'WHERE "report_id" IS NOT NULL'
        )
    else:
        schema_editor.add_index(model, INDEX)


def drop_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    model = apps.get_model("billing", "UsageRecord")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('DROP INDEX CONCURRENTLY IF EXISTS "usage_report"')
    else:
        schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0006_lean_ledger_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="usagerecord", index=INDEX)],
            database_operations=[migrations.RunPython(create_index, drop_index)],
        ),
    ]
