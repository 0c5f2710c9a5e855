"""Money as Stripe counts it: amounts in a currency's minor unit, and how many of those make one major unit.

Stripe takes and answers amounts in the minor unit: cents for `usd`, but the yen itself for `jpy` (a
zero-decimal currency) and the fils for `kwd` (three decimals). See
https://docs.stripe.com/currencies#zero-decimal and #three-decimal.
"""

from decimal import ROUND_HALF_UP, Decimal

ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_per_major(currency: str) -> Decimal:
    """How many minor units make one major unit of `currency` (100 for usd, 1 for jpy, 1000 for kwd)."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return Decimal(1)
    if code in THREE_DECIMAL_CURRENCIES:
        return Decimal(1000)
    return Decimal(100)


def invoice_line_minor(quantity: int, unit_amount_decimal: Decimal) -> Decimal:
    """What Stripe invoices for `quantity` units at a decimal price: rounded once per invoice line (per
    price), to the nearest whole minor unit, half up (30 x 0.05 cents = 1.5 -> 2 cents).
    https://docs.stripe.com/billing/subscriptions/decimal-amounts#rounding"""
    return (quantity * unit_amount_decimal).to_integral_value(rounding=ROUND_HALF_UP)


def to_major(minor: Decimal | int, currency: str) -> Decimal:
    """An amount in `currency`'s minor units (what Stripe and our prices hold) in its major units."""
    return Decimal(minor) / minor_per_major(currency)
