from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portal.services import usage_rollup_refresh


class Command(BaseCommand):
    help = "Roll the usage ledger up by day for the dashboards (what the beat task does; --since to rebuild)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=date.fromisoformat, help="Recompute every day from this one (YYYY-MM-DD).")

    def handle(self, *args: Any, since: date | None = None, **options: Any) -> None:
        days = usage_rollup_refresh(since=since)
        self.stdout.write(f"Rolled up {days} day(s).")
