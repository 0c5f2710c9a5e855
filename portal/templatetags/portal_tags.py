from typing import Any

from django import template

from portal.selectors import organisation_label

register = template.Library()


@register.filter
def chart_rows(data: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """A Chart.js data object as table rows: (label, [one value per dataset])."""
    columns = [ds["data"] for ds in data.get("datasets", [])]
    return [(label, [col[i] for col in columns]) for i, label in enumerate(data.get("labels", []))]


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
