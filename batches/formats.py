"""Input lines and output lines: streaming line reader, JSONL and CSV parsers, output writers.

Everything here is pure (files in, numpy feeds and bytes out) and streams: a line at a time, never
the whole file. Parsing reuses the `:predict` body rules of `inference.tensors`, so a batch line is
accepted exactly when the same body would be accepted online.
"""

import codecs
import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import numpy as np
import orjson

from apiservice.errors import APIError
from inference.datatypes import FLOAT_TYPES, INT_TYPES, OIP_TO_NUMPY
from inference.tensors import check_feeds, predict_feeds, predict_response, to_array

Signature = Mapping[str, list[dict[str, Any]]]
READ_BLOCK = 1024 * 1024
UTF8_BOM = codecs.BOM_UTF8  # Excel's "CSV UTF-8" and some JSONL writers start the file with it


class LineError(Exception):
    """A bad input line: reported with its number (and its custom_id when that was valid), the rest
    of the file goes on."""

    def __init__(self, code: str, message: str, custom_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.custom_id = custom_id


class FileError(Exception):
    """A defect that makes the whole file unusable (empty, bad CSV header)."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line


class RawLine(NamedTuple):
    """One physical line (a tuple: validation makes one per line, and a dataclass costs 3x more)."""

    number: int  # 1-based physical line number in the file
    offset: int  # byte offset of the line's first byte
    data: bytes  # without the line ending


def iter_lines(
    stream: IO[bytes], *, offset: int = 0, length: int | None = None, first_number: int = 1
) -> Iterator[RawLine]:
    """The lines of a binary stream (or of `length` bytes of it from `offset`), read in 1 MiB blocks.

    A UTF-8 byte order mark at the start of the file is not part of the first line's data (its offset
    stays 0, the offsets of the lines after it are unchanged).
    """
    stream.seek(offset)
    bom = offset == 0 and stream.read(len(UTF8_BOM)) == UTF8_BOM
    lines = _lines(stream, offset=offset, length=length, first_number=first_number)
    if bom:  # outside the per-line loop: it costs nothing to the files without one
        first = next(lines, None)
        if first is not None:
            yield first._replace(data=first.data[len(UTF8_BOM) :])
    yield from lines


def _lines(stream: IO[bytes], *, offset: int, length: int | None, first_number: int) -> Iterator[RawLine]:
    stream.seek(offset)
    remaining = length
    pending, pending_offset, number, position = b"", offset, first_number, offset
    while remaining is None or remaining > 0:
        block = stream.read(READ_BLOCK if remaining is None else min(READ_BLOCK, remaining))
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
        position += len(block)
        parts = (pending + block).split(b"\n")
        pending = parts.pop()
        for part in parts:
            yield RawLine(number, pending_offset, part.rstrip(b"\r"))
            pending_offset += len(part) + 1
            number += 1
    if pending:
        yield RawLine(number, pending_offset, pending.rstrip(b"\r"))


@dataclass
class Request:
    """One parsed input line: its feeds, and what its output line needs."""

    number: int
    custom_id: str
    form: str  # "instances" or "inputs"
    feeds: dict[str, np.ndarray]
    rows: int
    csv_values: list[str] = field(default_factory=list)
    offset: int = 0


def _check(feeds: dict[str, np.ndarray], signature: Signature, *, max_rows: int, nan_policy: str, prefix: str) -> int:
    try:
        return check_feeds(feeds, signature=signature, max_rows=max_rows, nan_policy=nan_policy, param_prefix=prefix)
    except APIError as exc:
        if exc.code == "too_many_rows":  # the online wording says "use a batch job": this is one
            rows = max(int(value.shape[0]) for value in feeds.values() if value.ndim)
            message = f"The line has {rows} rows; at most {max_rows} rows per line: split the line."
            raise LineError(exc.code, message) from None
        raise LineError(exc.code, exc.message) from None


class JSONLParser:
    """`{"custom_id": "...", "instances": [...]}` or `{"custom_id": "...", "inputs": {...}}` per line."""

    format = "jsonl"

    def __init__(self, signature: Signature, *, max_rows: int, nan_policy: str) -> None:
        self.signature, self.max_rows, self.nan_policy = signature, max_rows, nan_policy
        specs = signature["inputs"]
        shape = specs[0]["shape"] if len(specs) == 1 else []
        # The common tabular case (one float input [N, F]) has a fast path; see `_fast_rows`.
        self.fast = len(shape) == 2 and shape[0] < 0 and shape[1] > 0 and specs[0]["datatype"] in FLOAT_TYPES
        if self.fast:
            self.name, self.width = specs[0]["name"], shape[1]
            self.dtype = OIP_TO_NUMPY[specs[0]["datatype"]]
            self.limit = float(np.finfo(self.dtype).max)

    def header(self, line: RawLine) -> bool:
        """JSONL has no header: the first line is a request."""
        return False

    def _body(self, line: RawLine) -> tuple[dict[str, Any], str]:
        """The line's JSON object (without `custom_id`) and its custom_id, or LineError."""
        try:
            body = orjson.loads(line.data)
        except orjson.JSONDecodeError as exc:
            decode_check(line)  # orjson refuses bad UTF-8 too; say which it was, as for CSV
            raise LineError("invalid_json", f"Line is not valid JSON: {exc}") from None
        if type(body) is not dict:
            raise LineError("invalid_json", "Line must be a JSON object.")
        custom_id = body.pop("custom_id", None)
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            raise LineError(
                "invalid_custom_id", "Line needs a 'custom_id': a non-empty string of at most 512 characters."
            )
        return body, custom_id

    def _fast_rows(self, body: dict[str, Any]) -> list[list[Any]] | None:
        """`{"instances": [[F numbers], ...]}` checked with C-level builtins, or None for the full path.

        It accepts only what the full `:predict` rules accept (plain ints below 2**53 and floats within
        the datatype's range, every row F long), and `np.array(rows, dtype)` gives the same array;
        anything else, valid or not, goes through `predict_feeds` + `check_feeds`, which decide and word
        the error. The rows stay Python lists so that a caller can stack many lines in one array.
        """
        instances = body.get("instances")
        if len(body) != 1 or type(instances) is not list or not 0 < len(instances) <= self.max_rows:
            return None
        width, limit = self.width, self.limit
        for row in instances:
            if type(row) is not list or len(row) != width:
                return None
            kinds = set(map(type, row))
            if kinds == _FLOATS:  # the common case: no Python loop over the values
                if max(row) > limit or min(row) < -limit:
                    return None
            elif kinds <= _NUMBERS:
                for value in row:
                    if not (-limit <= value <= limit if type(value) is float else -(2**53) < value < 2**53):
                        return None
            else:
                return None
        return instances  # type: ignore[no-any-return]

    def parse_rows(self, line: RawLine) -> "tuple[str, list[list[Any]]] | Request":
        """Check a line; on the fast path its (custom_id, rows) as Python lists, else the Request.

        Validation stacks the rows of many lines into one array (`rows_array`), which costs far less
        than one small array per line; both give what `parse` gives.
        """
        body, custom_id = self._body(line)
        if self.fast:
            rows = self._fast_rows(body)
            if rows is not None:
                return custom_id, rows
        return self._full(body, line, custom_id)

    def rows_array(self, rows: list[list[Any]]) -> np.ndarray:
        """Fast-path rows (of one line or of many) as the model input's array."""
        return np.array(rows, dtype=self.dtype)

    def parse(self, line: RawLine) -> Request:
        parsed = self.parse_rows(line)
        if isinstance(parsed, Request):
            return parsed
        custom_id, rows = parsed
        feeds = {self.name: self.rows_array(rows)}
        return Request(line.number, custom_id, "instances", feeds, len(rows), offset=line.offset)

    def _full(self, body: dict[str, Any], line: RawLine, custom_id: str) -> Request:
        try:
            feeds, form = predict_feeds(body, signature=self.signature)
        except APIError as exc:
            raise LineError(exc.code, exc.message, custom_id) from None
        try:
            rows = _check(feeds, self.signature, max_rows=self.max_rows, nan_policy=self.nan_policy, prefix=form)
        except LineError as exc:
            exc.custom_id = custom_id
            raise
        return Request(number=line.number, custom_id=custom_id, form=form, feeds=feeds, rows=rows, offset=line.offset)


_FLOATS = {float}
_NUMBERS = {float, int}


def csv_input_columns(signature: Signature) -> list[tuple[str, str, int | None]]:
    """(column, input name, feature index or None) for each CSV column a model's inputs need.

    An input of shape [N] or [N, 1] is one column named after it; [N, F] gives F columns `name_0` … .
    """
    columns: list[tuple[str, str, int | None]] = []
    for spec in signature["inputs"]:
        shape = spec["shape"]
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            columns.append((spec["name"], spec["name"], None))
        elif len(shape) == 2 and shape[1] > 0:
            columns.extend((f"{spec['name']}_{i}", spec["name"], i) for i in range(shape[1]))
        else:
            raise FileError("csv_unsupported", f"Input '{spec['name']}' has shape {shape}: CSV needs [N] or [N, F].")
    return columns


def csv_output_columns(signature: Signature) -> list[tuple[str, str, int | None]]:
    """(column, output name, index or None) for CSV output; None when an output does not fit in columns."""
    columns: list[tuple[str, str, int | None]] = []
    for spec in signature["outputs"]:
        shape = spec["shape"]
        if len(shape) == 1:
            columns.append((spec["name"], spec["name"], None))
        elif len(shape) == 2 and shape[1] > 0:
            if shape[1] == 1:
                columns.append((spec["name"], spec["name"], 0))
            else:
                columns.extend((f"{spec['name']}_{i}", spec["name"], i) for i in range(shape[1]))
        else:
            raise FileError(
                "csv_unsupported", f"Output '{spec['name']}' has shape {shape}: it does not fit CSV columns."
            )
    return columns


def _cell(value: str, datatype: str) -> Any:
    if datatype in FLOAT_TYPES or datatype in INT_TYPES:
        # Python's float() and int() also read `1_000` and other scripts' digits: not a CSV number.
        if "_" in value or not value.isascii():
            raise ValueError(value)
        return float(value) if datatype in FLOAT_TYPES else int(value)
    if datatype == "BOOL":
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(value)
        return lowered in ("true", "1")
    return value


class CSVParser:
    """A header naming the model's input columns (and optionally `custom_id`), then one row per line.

    A record is one physical line: quoted fields may hold commas, not line breaks.
    """

    format = "csv"

    def __init__(self, signature: Signature, *, max_rows: int, nan_policy: str) -> None:
        self.signature, self.max_rows, self.nan_policy = signature, max_rows, nan_policy
        self.specs = {spec["name"]: spec for spec in signature["inputs"]}
        self.columns = csv_input_columns(signature)
        self.positions: list[int] = []
        self.custom_id_position: int | None = None
        self.width = 0

    def header(self, line: RawLine) -> bool:
        try:
            names = [name.strip() for name in _csv_values(line)]
        except csv.Error as exc:  # a classic-Mac file (lines ending in CR only) is one line holding CRs
            raise FileError("invalid_header", f"The CSV header {_csv_refusal(exc, line)}", line.number) from None
        if len(set(names)) != len(names):
            raise FileError("invalid_header", "The CSV header names a column twice.", line.number)
        known = {column for column, _, _ in self.columns} | {"custom_id"}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise FileError(
                "unknown_column",
                f"Unknown CSV column '{unknown[0]}'; expected: {', '.join(sorted(known))}.",
                line.number,
            )
        missing = [column for column, _, _ in self.columns if column not in names]
        if missing:
            raise FileError("missing_column", f"The CSV header lacks column '{missing[0]}'.", line.number)
        self.positions = [names.index(column) for column, _, _ in self.columns]
        self.custom_id_position = names.index("custom_id") if "custom_id" in names else None
        self.width = len(names)
        return True

    def parse_rows(self, line: RawLine) -> Request:
        """CSV lines have no fast path: the same as `parse`."""
        return self.parse(line)

    def parse(self, line: RawLine) -> Request:
        decode_check(line)
        try:
            values = _csv_values(line)
        except csv.Error as exc:
            raise LineError("invalid_csv", f"Row {_csv_refusal(exc, line)}") from None
        if len(values) != self.width:
            raise LineError("wrong_column_count", f"Row has {len(values)} values; the header has {self.width} columns.")
        position = self.custom_id_position
        custom_id = values[position] if position is not None else line_custom_id(line.number)
        if not custom_id or len(custom_id) > 512:  # the rule JSONL lines follow
            raise LineError("invalid_custom_id", "Row needs a custom_id: a non-empty string of at most 512 characters.")
        try:
            return self._request(line, values, custom_id)
        except LineError as exc:
            # A custom_id named by the line number is filled in once the file's numbers are known.
            exc.custom_id = custom_id if position is not None else None
            raise

    def _request(self, line: RawLine, values: list[str], custom_id: str) -> Request:
        cells: dict[str, list[Any]] = {}
        for (column, name, _), position in zip(self.columns, self.positions, strict=True):
            datatype = self.specs[name]["datatype"]
            try:
                cells.setdefault(name, []).append(_cell(values[position], datatype))
            except ValueError:
                raise LineError(
                    "invalid_value", f"Column '{column}' holds '{values[position]}', not {datatype}."
                ) from None
        feeds = {}
        for name, row in cells.items():
            spec = self.specs[name]
            shape = [1, *([len(row)] if len(spec["shape"]) == 2 else [])]
            try:
                feeds[name] = to_array(row, datatype=spec["datatype"], name=name, param=name).reshape(shape)
            except APIError as exc:
                raise LineError(exc.code, exc.message) from None
        _check(feeds, self.signature, max_rows=self.max_rows, nan_policy=self.nan_policy, prefix="row")
        csv_values = [values[position] for position in self.positions]
        return Request(
            number=line.number,
            custom_id=custom_id,
            form="instances",
            feeds=feeds,
            rows=1,
            csv_values=csv_values,
            offset=line.offset,
        )


def _csv_values(line: RawLine) -> list[str]:
    """The fields of one physical CSV line; csv.Error for a line the csv module refuses (a lone CR, a
    field over its size limit)."""
    return next(csv.reader([line.data.decode("utf-8")]))


def _csv_refusal(exc: csv.Error, line: RawLine) -> str:
    if b"\r" in line.data:
        return "holds a line break (CR): lines end with LF or CRLF, and a field holds no line break."
    return f"is not valid CSV ({exc})."


Parser = JSONLParser | CSVParser


def line_custom_id(number: int) -> str:
    """The custom_id of a CSV row when the file has no custom_id column: its line number."""
    return f"line-{number}"


def ids_from_line_numbers(parser: Parser) -> bool:
    """Whether the parser (after the header) names requests by their line numbers."""
    return isinstance(parser, CSVParser) and parser.custom_id_position is None


def parser_for(file_format: str, signature: Signature, *, max_rows: int, nan_policy: str) -> Parser:
    cls = CSVParser if file_format == "csv" else JSONLParser
    return cls(signature, max_rows=max_rows, nan_policy=nan_policy)


def decode_check(line: RawLine) -> None:
    try:
        line.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError("invalid_encoding", f"Line is not UTF-8 (byte {exc.start}).") from None


# --- Output ---------------------------------------------------------------------------------------


def output_line(*, batch_uid: str, request: Request, response: Any) -> bytes:
    return _output_record(batch_uid, request.number, request.custom_id, request.form, response)


def _output_record(batch_uid: str, number: int, custom_id: str, form: str, response: Any) -> bytes:
    key = "predictions" if form == "instances" else "outputs"
    return orjson.dumps(
        {"id": f"{batch_uid}-{number}", "custom_id": custom_id, "response": {key: response}, "error": None},
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
    )


def output_lines(
    *,
    batch_uid: str,
    numbers: Sequence[int],
    custom_ids: Sequence[str],
    rows: Sequence[int],
    forms: Sequence[str] | None,
    outputs: Mapping[str, np.ndarray],
) -> bytes:
    """The output lines of consecutive requests whose rows are stacked in `outputs`, as one buffer.

    The same bytes as `output_line` per request; `forms` None means every request used `instances`.
    Each request's predictions are a slice of one `tolist()` of the whole group.
    """
    if forms is None or "instances" in forms:
        predictions = predict_response(outputs, form="instances")
    parts, start = [], 0
    record = _output_record
    for index, number in enumerate(numbers):
        end = start + rows[index]
        form = "instances" if forms is None else forms[index]
        if form == "instances":
            response = predictions[start:end]
        else:
            response = predict_response({name: value[start:end] for name, value in outputs.items()}, form=form)
        parts.append(record(batch_uid, number, custom_ids[index], form, response))
        start = end
    return b"".join(parts)


def error_line(*, batch_uid: str, number: int, custom_id: str | None, code: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "id": f"{batch_uid}-{number}",
            "custom_id": custom_id,
            "line": number,
            "response": None,
            "error": {"code": code, "message": message},
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def csv_header(signature: Signature) -> bytes:
    names = [
        "custom_id",
        *(c for c, _, _ in csv_input_columns(signature)),
        *(c for c, _, _ in csv_output_columns(signature)),
    ]
    return _csv_row(names)


def csv_row(
    *,
    custom_id: str,
    csv_values: list[str],
    outputs: Mapping[str, np.ndarray],
    row: int,
    columns: list[tuple[str, str, int | None]],
) -> bytes:
    values: list[Any] = [custom_id, *csv_values]
    for _, name, index in columns:
        value = outputs[name][row] if index is None else outputs[name][row][index]
        values.append(
            value.decode("utf-8", "replace")
            if isinstance(value, bytes)
            else value.item()
            if isinstance(value, np.generic)
            else value
        )
    return _csv_row(values)


def _csv_row(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")


def numpy_dtype(datatype: str) -> np.dtype:
    return OIP_TO_NUMPY[datatype]
