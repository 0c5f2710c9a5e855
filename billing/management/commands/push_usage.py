from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing import outbox, payments, stripe_client


class Command(BaseCommand):
    help = "Push unreported usage to Stripe now (what the beat task does every minute)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not stripe_client.configured():
            raise CommandError(payments.BillingNotConfigured().message)
        outcomes = outbox.usage_push()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in sorted(outcomes.items())) or "nothing to do")
