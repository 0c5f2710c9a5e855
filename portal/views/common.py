"""Small helpers shared by the portal and staff views."""

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(rows: Iterable[list[Any]], filename: str) -> StreamingHttpResponse:
    """Stream rows as CSV (one line at a time, so big exports never sit in memory)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        for row in rows:
            yield writer.writerow(row)

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
