"""Small helpers shared by the portal and staff views."""

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django import forms
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

PAGE_SIZE = 50


def newest_first_page(request: HttpRequest, rows: QuerySet[Any]) -> Page[Any]:
    """The `?page=` page of `rows`, newest first (by id); a missing or bad number gives a real page."""
    return Paginator(rows.order_by("-id"), PAGE_SIZE).get_page(request.GET.get("page"))


class _Echo:
    def write(self, value: str) -> str:
        return value


# A text cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets: an
# organisation named '=HYPERLINK(...)' would run in the spreadsheet of whoever opens the export. Such
# text is written with a leading apostrophe, which the spreadsheet shows as text (OWASP's advice).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_response(rows: Iterable[list[Any]], filename: str) -> StreamingHttpResponse:
    """Stream rows as CSV (one line at a time, so big exports never sit in memory); text that a
    spreadsheet would run as a formula is written as text."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        for row in rows:
            yield writer.writerow([_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def invalid_filter_response(form: forms.Form) -> HttpResponse:
    """A 400 naming what is wrong with an export's filters (an export never falls back to another range)."""
    problems = [str(message) for errors in form.errors.values() for message in errors]
    return HttpResponse("\n".join(problems) + "\n", status=400, content_type="text/plain; charset=utf-8")


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """No icon, said without a 404: the portal's pages declare none, but the admin's make browsers ask."""
    response = HttpResponse(status=204)
    response["Cache-Control"] = "public, max-age=86400"
    return response
