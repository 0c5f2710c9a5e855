from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import outbox, payments, stripe_client

# Stripe's meter events go back at most 35 days from when they are sent; ten years is past anything to
# compare (a million days went back before year 1 and ended in an OverflowError traceback).
MAX_DAYS = 3650


class Command(BaseCommand):
    help = (
        "Compare our sent usage with Stripe's meter event summaries now (what the beat task does daily) and "
        "record or resolve Reconciliation issues."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=3, help="Complete UTC days before today (default 3).")
        parser.add_argument(
            "--include-today", action="store_true", help="Today so far too (reports still pending show as differences)."
        )

    def handle(self, *args: Any, days: int, include_today: bool, **options: Any) -> None:
        if not stripe_client.configured():
            raise CommandError(payments.BillingNotConfigured().message)
        if not 0 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be 0 to {MAX_DAYS}.")
        issues = outbox.usage_reconcile(days=days, include_today=include_today)
        self.stdout.write(f"{issues} difference(s) with Stripe; see Reconciliation issues in the admin.")
