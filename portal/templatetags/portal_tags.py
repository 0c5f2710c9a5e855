from typing import Any

from django import template

register = template.Library()


@register.filter
def chart_rows(data: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """A Chart.js data object as table rows: (label, [one value per dataset])."""
    columns = [ds["data"] for ds in data.get("datasets", [])]
    return [(label, [col[i] for col in columns]) for i, label in enumerate(data.get("labels", []))]
