from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import CursorPagination as _CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class CursorPagination(_CursorPagination):
    """Stable, opaque cursors over a unique ordering; `?limit=` up to 100."""

    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    ordering = "-id"


def paginated_response(
    *, request: Request, view: APIView, queryset: QuerySet[Any], render: Callable[[Sequence[Any]], Any]
) -> Response:
    """One cursor page of `queryset`, each page's items turned into JSON by `render`."""
    paginator = CursorPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(render(page or []))
