"""The seeded catalogue: three plans and three meters (data only; staff edit the rows afterwards)."""

from decimal import Decimal

METERS = ["online_predictions", "batch_rows", "bundle_downloads"]

# (code, name, rate limit per key, hard cap, self-serve, {meter: (included units/month, cents per unit)})
PLANS: list[tuple[str, str, str, bool, bool, dict[str, tuple[int | None, Decimal]]]] = [
    (
        "free",
        "Free",
        "60/minute",
        True,
        False,
        {
            "online_predictions": (1_000, Decimal("0")),
            "batch_rows": (10_000, Decimal("0")),
            "bundle_downloads": (10, Decimal("0")),
        },
    ),
    (
        "payg",
        "Pay as you go",
        "1200/minute",
        False,
        True,
        {
            "online_predictions": (None, Decimal("0.05")),  # $0.50 per 1,000 predictions
            "batch_rows": (None, Decimal("0.01")),  # $0.10 per 1,000 rows
            "bundle_downloads": (None, Decimal("20")),  # $0.20 per download
        },
    ),
    (
        "enterprise",
        "Enterprise",
        "12000/minute",
        False,
        False,
        {
            "online_predictions": (None, Decimal("0.03")),
            "batch_rows": (None, Decimal("0.006")),
            "bundle_downloads": (None, Decimal("10")),
        },
    ),
]


def seed(plan_model: type, price_model: type, meter_model: type) -> None:
    """Create what is missing; never overwrite what staff changed. Used by the data migration too."""
    for meter in METERS:
        meter_model.objects.get_or_create(meter=meter, defaults={"event_name": f"mm_{meter}"})  # type: ignore[attr-defined]
    for code, name, rate, hard_cap, self_serve, prices in PLANS:
        plan, _ = plan_model.objects.get_or_create(  # type: ignore[attr-defined]
            code=code, defaults={"name": name, "rate_limit": rate, "hard_cap": hard_cap, "self_serve": self_serve}
        )
        for meter, (included, amount) in prices.items():
            price_model.objects.get_or_create(  # type: ignore[attr-defined]
                plan=plan, meter=meter, defaults={"included_units": included, "unit_amount_decimal": amount}
            )
