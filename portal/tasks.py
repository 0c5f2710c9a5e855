from celery import shared_task

from . import services


@shared_task(name="portal.usage_rollup_refresh", ignore_result=True)
def usage_rollup_refresh() -> int:
    """Roll closed days of the ledger into UsageRollup (idempotent; serialised on the cursor row)."""
    return services.usage_rollup_refresh()
