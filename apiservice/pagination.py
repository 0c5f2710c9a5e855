from rest_framework.pagination import CursorPagination as _CursorPagination


class CursorPagination(_CursorPagination):
    """Stable, opaque cursors over a unique ordering; `?limit=` up to 100."""

    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    ordering = "-id"
