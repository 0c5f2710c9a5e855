from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination as _CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .errors import InvalidInput


class CursorPagination(_CursorPagination):
    """Stable, opaque cursors over a unique ordering; `?limit=` up to 100."""

    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    ordering = "-id"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not _is_integer(raw) or not 1 <= int(raw) <= self.max_page_size:
            raise InvalidInput(f"limit must be an integer from 1 to {self.max_page_size}.", param="limit")
        return int(raw)

    # The ordering field's values are integers (ids, version numbers): a cursor's position must be one.
    numeric_position = True

    def decode_cursor(self, request: Request) -> Any:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:  # DRF answers a bad cursor with 404; it is a bad parameter
            cursor = None
            valid = False
        else:
            position = cursor.position if cursor is not None else None
            valid = position is None or not self.numeric_position or _is_integer(str(position))
        if not valid:
            raise InvalidInput("The cursor is not one this list gave out; follow `next`.", param="cursor")
        return cursor


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()  # ASCII: int() refuses "²", which isdigit() accepts


def paginated_response(
    *, request: Request, view: APIView, queryset: QuerySet[Any], render: Callable[[Sequence[Any]], Any]
) -> Response:
    """One cursor page of `queryset`, each page's items turned into JSON by `render`."""
    paginator = CursorPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(render(page or []))
