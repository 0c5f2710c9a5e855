from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from billing import money as billing_money
from portal.access import ORG_FIELD
from portal.selectors import organisation_label

register = template.Library()


@register.filter
def chart_rows(data: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """A Chart.js data object as table rows: (label, [one value per dataset])."""
    columns = [ds["data"] for ds in data.get("datasets", [])]
    return [(label, [col[i] for col in columns]) for i, label in enumerate(data.get("labels", []))]


@register.simple_tag(takes_context=True)
def organisation_field(context: template.Context) -> str:
    """A portal form's hidden field naming the organisation the page shows (`portal.access.ORG_FIELD`):
    a POST from a page left open on another organisation than the session's is then refused, not misapplied."""
    membership = getattr(context.get("request"), "membership", None)
    if membership is None:
        return ""
    return format_html('<input type="hidden" name="{}" value="{}">', ORG_FIELD, membership.organisation_id)


@register.simple_tag(takes_context=True)
def current_page(context: template.Context, url: str | None, exact: bool = False) -> str:
    """` aria-current="page"` on the navigation link of the page shown: its URL, or (not `exact`) a page
    under it (a model's page is under Models)."""
    path = getattr(context.get("request"), "path", "")
    if url and (path == url or (not exact and path.startswith(url))):
        return mark_safe(' aria-current="page"')
    return ""


@register.filter
def batch_finished(batch: Any) -> bool:
    """A batch in a terminal state (nothing more to poll for)."""
    from batches.models import Batch

    return batch.status in Batch.TERMINAL


@register.filter
def percent(done: int, total: int) -> int:
    return int(100 * done / total) if total else 0


@register.filter
def org_label(organisation: Any) -> str:
    """An organisation as "name (slug)": names need not be unique."""
    return organisation_label(name=organisation.name, slug=organisation.slug)


@register.filter
def money(amount: Any) -> str:
    """An amount in major units as customers read money: at least two decimals ("12.50", "0.00"), more
    only when it has them (per-unit prices and small estimates such as "0.0005")."""
    if amount in (None, ""):
        return ""
    value = Decimal(str(amount))
    cents = value.quantize(Decimal("0.01"))
    return format(cents if cents == value else value.normalize(), "f")


@register.filter
def minor_money(amount: Any, currency: str = "") -> str:
    """An amount in Stripe's minor units (cents) in major units: 1234 USD cents -> "12.34"."""
    if amount in (None, ""):
        return ""
    major = billing_money.to_major(int(amount), str(currency))
    return str(major) if billing_money.minor_per_major(str(currency)) == 1 else money(major)
