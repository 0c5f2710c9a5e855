from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing import payments, stripe_client


class Command(BaseCommand):
    help = "Create or update the Stripe Billing Meters, Products and Prices for our plans (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            actions = payments.catalog_sync()
        except payments.BillingNotConfigured as exc:
            raise CommandError(exc.message) from exc
        except (stripe_client.StripeTransient, stripe_client.StripeRejected) as exc:
            raise CommandError(f"Stripe: {exc}") from exc
        for action in actions:
            self.stdout.write(action)
        self.stdout.write(self.style.SUCCESS("Stripe catalogue in sync."))
