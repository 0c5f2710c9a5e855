"""Serving a stored file with a strong ETag, Content-Length and single byte ranges (RFC 9110)."""

import re
from collections.abc import Callable, Iterator
from typing import IO

from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.utils.http import parse_etags

from apiservice.errors import error_response

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


# Any file is shorter than this; a longer position (int() refuses past 4,300 digits) reads as it.
_PAST_ANY_FILE = 10**18


class Unsatisfiable(Exception):
    pass


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < len(str(_PAST_ANY_FILE)) else _PAST_ANY_FILE


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for one satisfiable range; None to serve everything (no, several or
    malformed ranges may be ignored); Unsatisfiable when the range lies outside the file."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = _position(last)
        if length == 0 or size == 0:
            raise Unsatisfiable
        return max(size - length, 0), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise Unsatisfiable
    end = min(_position(last), size - 1) if last else size - 1
    return start, end


def none_match(header: str, etag: str) -> bool:
    """If-None-Match with RFC 9110's weak comparison (13.1.2): `W/"x"` matches `"x"`; `*` matches any
    current representation, and a bundle being served has one."""
    tags = parse_etags(header)
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _slice(handle: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


def file_response(
    request: HttpRequest,
    *,
    open_file: Callable[[], IO[bytes]],
    size: int,
    etag: str,
    filename: str,
    content_type: str = "application/zip",
    before_body: Callable[[int], None] | None = None,
) -> HttpResponse | StreamingHttpResponse | FileResponse:
    """The file, a range of it, 304 or 416. `before_body(status)` runs just before a 200 or 206 opens
    the file; it may raise to serve nothing (e.g. a quota refusal)."""
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-transform"}
    if none_match(request.headers.get("If-None-Match", ""), etag):
        response_304 = HttpResponseNotModified()
        for name, value in headers.items():
            response_304[name] = value
        return response_304
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    try:
        span = parse_range(wanted, size) if wanted and (if_range is None or if_range == etag) else None
    except Unsatisfiable:
        return error_response(
            request,
            status=416,
            code="range_not_satisfiable",
            message=f"The file has {size} bytes.",
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    if before_body is not None:
        before_body(200 if span is None else 206)
    response: FileResponse | StreamingHttpResponse
    if span is None:
        response = FileResponse(open_file(), as_attachment=True, filename=filename, content_type=content_type)
        response["Content-Length"] = str(size)
    else:
        start, end = span
        response = StreamingHttpResponse(
            _slice(open_file(), start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    for name, value in headers.items():
        response[name] = value
    return response
