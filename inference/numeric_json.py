"""Large JSON request bodies whose tensors are dense numbers, parsed straight to numpy (simdjson).

The one module that imports simdjson. `orjson.loads` followed by `np.asarray` builds a Python float
for every value before numpy copies them into an array: for 64 rows of 256 floats that is ~0.9 ms of
the request. simdjson parses the body once and copies an array's numbers straight into a buffer.

The fast path answers only what it can prove, and returns None otherwise, so that the caller takes
the general path (orjson, then the checks in `inference.tensors`), whose answers and error messages
stay the reference:
- every `[` byte of the body belongs to an array the path expects (the rows, or a tensor's `shape`
  and `data`), so no value can hide a nested or ragged list, which `as_buffer` would flatten;
- every value of those arrays is a number (`as_buffer` refuses anything else), and below 2**53 in
  magnitude, so its float64 is the same number numpy's conversion of the JSON integer would give;
- object keys are unique (simdjson's lookup takes the first of duplicates, orjson the last);
- the body does not start with a UTF-8 byte order mark (simdjson skips it, orjson refuses it).
What simdjson rejects (bad JSON, numbers out of range) goes to the general path too.
"""

import threading
from typing import Any

import numpy as np
import simdjson

from .datatypes import FLOAT_TYPES

MIN_BYTES = 4096  # below this the general path is as fast, and small calls keep one code path
MAX_BYTES = 1 << 20  # a parser keeps buffers sized to its largest document: ~3.5 MB per thread at 1 MiB
_EXACT_LIMIT = 2.0**53
_OPEN_BRACKET = ord("[")
_BOM = b"\xef\xbb\xbf"
_local = threading.local()


def _parser() -> simdjson.Parser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def _brackets(raw: bytes) -> int:
    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == _OPEN_BRACKET))


def _unique_keys(obj: Any) -> list[str] | None:
    if not isinstance(obj, simdjson.Object):
        return None
    keys = list(obj.keys())
    return keys if len(set(keys)) == len(keys) else None


def _numbers(array: Any) -> np.ndarray | None:
    """The array's values as float64 (flattened), or None if one is not a number or is too large."""
    values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    return values if bool((np.abs(values) < _EXACT_LIMIT).all()) else None


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def _parsed(raw: bytes, build: Any) -> Any:
    if not MIN_BYTES <= len(raw) <= MAX_BYTES or raw.startswith(_BOM):
        return None
    try:
        return build(_parser().parse(raw), raw)
    except (ValueError, TypeError, KeyError):  # not JSON simdjson accepts, or not the shape expected
        return None
    except RuntimeError:  # the parser is still held by a document (it should not be): start afresh
        _local.parser = None
        return None


def predict_matrix(raw: bytes) -> tuple[str, np.ndarray] | None:
    """A `:predict` body that is only rows of numbers, `{"instances": [[n, ...], ...]}` or the columnar
    `{"inputs": [[n, ...], ...]}` of a one-input model: its form and a float64 matrix, or None."""
    return _parsed(raw, _predict_matrix)  # type: ignore[no-any-return]


def _predict_matrix(document: Any, raw: bytes) -> tuple[str, np.ndarray] | None:
    keys = _unique_keys(document)
    if keys not in (["instances"], ["inputs"]):
        return None
    form = keys[0]
    rows = document[form]
    if not isinstance(rows, simdjson.Array) or not len(rows) or _brackets(raw) != len(rows) + 1:
        return None
    widths = {len(row) if isinstance(row, simdjson.Array) else -1 for row in rows}
    if len(widths) != 1 or -1 in widths:
        return None
    (width,) = widths
    values = _numbers(rows)
    return None if values is None else (form, values.reshape(len(rows), width))


def oip_request(raw: bytes) -> dict[str, Any] | None:
    """An OIP v2 infer request as `orjson.loads` would return it, except that the `data` of a float
    tensor is a flat float64 array; None unless every tensor's `shape` and `data` are flat arrays and
    the body holds no other array than `inputs` and `outputs`."""
    return _parsed(raw, _oip_request)  # type: ignore[no-any-return]


def _oip_request(document: Any, raw: bytes) -> dict[str, Any] | None:
    keys = _unique_keys(document)
    if keys is None or "inputs" not in keys:
        return None
    inputs = document["inputs"]
    outputs = document["outputs"] if "outputs" in keys else None
    if not isinstance(inputs, simdjson.Array) or (outputs is not None and not isinstance(outputs, simdjson.Array)):
        return None
    if _brackets(raw) != 1 + 2 * len(inputs) + (outputs is not None):
        return None
    tensors = []
    for tensor in inputs:
        if not isinstance(tensor, simdjson.Object) or (fields := _unique_keys(tensor)) is None:
            return None
        if not isinstance(tensor["shape"], simdjson.Array):
            return None
        data = tensor["data"]
        if not isinstance(data, simdjson.Array):
            return None
        item = {field: _python(tensor[field]) for field in fields if field != "data"}
        if item.get("datatype") in FLOAT_TYPES:
            item["data"] = _numbers(data)
            if item["data"] is None:
                return None
        else:
            item["data"] = data.as_list()
        tensors.append(item)
    return {key: tensors if key == "inputs" else _python(document[key]) for key in keys}
