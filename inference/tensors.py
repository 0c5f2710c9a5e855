"""Turning request payloads into checked numpy feeds, and model outputs back into payloads.

Everything here is pure (numpy only). Every rule raises `InvalidInput` naming the input, so no bad
input ever reaches ONNX Runtime and none can make a 500.
"""

import base64
import binascii
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from apiservice.errors import InvalidInput

from .datatypes import FLOAT_TYPES, INT_TYPES, OIP_TO_NUMPY, oip_datatype_of

Signature = Mapping[str, list[dict[str, Any]]]


def _input_specs(signature: Signature) -> dict[str, dict[str, Any]]:
    return {spec["name"]: spec for spec in signature["inputs"]}


def to_array(data: Any, *, datatype: str, name: str, param: str) -> np.ndarray:
    """A JSON value (nested lists or scalar) as a numpy array of `datatype`, strictly checked."""
    if data is None:
        raise InvalidInput(f"Input '{name}' is null; send its values.", param=param)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"Input '{name}' is a ragged list: every row must have the same length.", param=param
        ) from None
    kind = raw.dtype.kind
    if kind == "O":
        if _is_ragged(data):
            raise InvalidInput(f"Input '{name}' is a ragged list: every row must have the same length.", param=param)
        raise InvalidInput(f"Input '{name}' mixes value types or holds numbers out of range.", param=param)
    target = OIP_TO_NUMPY[datatype]
    if datatype == "BYTES":
        # numpy makes "1" or "True" of a number or boolean among strings: each value must be one.
        if kind != "U" or not _all_strings(data):
            raise InvalidInput(f"Input '{name}' expects strings ({datatype}).", param=param)
        return np.array(data, dtype=object)  # not `raw.astype`: fixed-width strings lose trailing NULs
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"Input '{name}' expects booleans (BOOL).", param=param)
        return raw
    if kind in ("U", "S"):
        raise InvalidInput(f"Input '{name}' expects numbers ({datatype}), got strings.", param=param)
    if kind == "b" or _hides_bool(data, raw):
        raise InvalidInput(f"Input '{name}' expects numbers ({datatype}), got booleans.", param=param)
    if datatype in INT_TYPES:
        # Integral decimals (3.0) are accepted, as most JSON encoders write them; fractions are not.
        if kind == "f" and not (np.isfinite(raw).all() and (raw == np.floor(raw)).all()):
            raise InvalidInput(f"Input '{name}' expects integers ({datatype}), got decimals.", param=param)
        info = np.iinfo(target)
        if kind == "f" and raw.size and float(np.abs(raw).max()) >= _EXACT_FLOAT_INTEGERS:
            # numpy made floats of JSON integers it could not hold as one integer type (say 2**63 beside 2):
            # past 2**53 they are rounded, so the range is judged on the JSON values themselves.
            return _exact_integers(data, target=target, datatype=datatype, name=name, param=param)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise InvalidInput(f"Input '{name}' has values out of range for {datatype}.", param=param)
        return raw.astype(target, copy=False)
    if datatype in FLOAT_TYPES:
        with np.errstate(over="ignore"):  # overflow becomes inf, which the NaN policy then judges
            return raw.astype(target, copy=False)
    raise InvalidInput(f"Input '{name}' has an unsupported datatype {datatype}.", param=param)


def _all_strings(data: Any) -> bool:
    if isinstance(data, np.ndarray):
        return data.dtype.kind == "U"
    if isinstance(data, (list, tuple)):
        return all(_all_strings(item) for item in data)
    return isinstance(data, str)


_EXACT_FLOAT_INTEGERS = 2**53  # every integer up to this is exact in a float64


def _exact_integers(data: Any, *, target: np.dtype, datatype: str, name: str, param: str) -> np.ndarray:
    """Integers checked one by one as JSON gave them. A JSON integer is exact; a decimal (or an integer
    beyond 64 bits, which the parser reads as one) past 2**53 may be another integer rounded, so it is
    refused rather than guessed."""
    values = np.asarray(data, dtype=object)
    info = np.iinfo(target)
    for value in values.flat:
        if not info.min <= value <= info.max:
            raise InvalidInput(f"Input '{name}' has values out of range for {datatype}.", param=param)
        if isinstance(value, float) and abs(value) >= _EXACT_FLOAT_INTEGERS:
            raise InvalidInput(
                f"Input '{name}' has a value past 2**53 that is not written as an integer ({datatype} needs exact "
                "integers).",
                param=param,
            )
    return np.array([int(value) for value in values.flat], dtype=target).reshape(values.shape)


def _hides_bool(data: Any, array: np.ndarray) -> bool:
    """Whether numpy read a JSON boolean among numbers (as 1 or 0). Only a JSON list can hold one (not
    a lone value, which numpy keeps as a boolean, nor an array `numeric_json` parsed straight to
    numbers); a large one without a 0 or a 1 cannot, and is not scanned."""
    if not isinstance(data, list) or (array.size > 1024 and not bool(((array == 0) | (array == 1)).any())):
        return False
    return _holds_bool(data)


def _holds_bool(data: list[Any]) -> bool:
    types = set(map(type, data))
    return bool in types or (list in types and any(_holds_bool(item) for item in data if isinstance(item, list)))


def _is_ragged(data: Any) -> bool:
    if not isinstance(data, list):
        return False
    lengths = {len(item) if isinstance(item, list) else -1 for item in data}
    return len(lengths) > 1 or any(_is_ragged(item) for item in data if isinstance(item, list))


def check_feeds(
    feeds: Mapping[str, np.ndarray], *, signature: Signature, max_rows: int, nan_policy: str, param_prefix: str
) -> int:
    """Check arrays against the signature; return the number of rows (the batch size)."""
    specs = _input_specs(signature)
    for name in feeds:
        if name not in specs:
            raise InvalidInput(
                f"Unknown input '{name}'; this model's inputs are: {', '.join(specs)}.",
                param=f"{param_prefix}.{name}",
            )
    rows: int | None = None
    for name, spec in specs.items():
        param = f"{param_prefix}.{name}"
        if name not in feeds:
            raise InvalidInput(f"Missing input '{name}'.", param=param)
        array = feeds[name]
        expected = spec["shape"]
        if array.ndim != len(expected):
            raise InvalidInput(
                f"Input '{name}' has shape {list(array.shape)}; the model expects {_shape_text(expected)}.",
                param=param,
            )
        for axis, (got, want) in enumerate(zip(array.shape, expected, strict=True)):
            if want >= 0 and got != want:
                raise InvalidInput(
                    f"Input '{name}' has shape {list(array.shape)}; the model expects {_shape_text(expected)} "
                    f"(dimension {axis} must be {want}).",
                    param=param,
                )
        if array.ndim and array.shape[0] == 0:
            raise InvalidInput(f"Input '{name}' is empty.", param=param)
        if array.ndim and expected[0] < 0:
            if rows is not None and array.shape[0] != rows:
                raise InvalidInput(
                    f"Input '{name}' has {array.shape[0]} rows but another input has {rows}; "
                    "every input needs the same number of rows.",
                    param=param,
                )
            rows = int(array.shape[0])
            if array.shape[0] > max_rows:
                raise InvalidInput(
                    f"Input '{name}' has {array.shape[0]} rows; at most {max_rows} per request "
                    "(use a batch job for more).",
                    code="too_many_rows",
                    param=param,
                )
        if nan_policy == "reject" and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(
                f"Input '{name}' contains NaN or infinity, or a number too large for {spec['datatype']}.",
                code="non_finite_input",
                param=param,
            )
    return rows or 1


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if dim < 0 else str(dim) for dim in shape) + "]"


# --- :predict (TF-Serving / Vertex) ---------------------------------------------------------------


def dense_input(signature: Signature) -> dict[str, Any] | None:
    """The model's input when it has exactly one and it holds floats, else None."""
    inputs = signature["inputs"]
    return inputs[0] if len(inputs) == 1 and inputs[0]["datatype"] in FLOAT_TYPES else None


DEFAULT_SIGNATURE = "serving_default"  # TF-Serving's name for a model's default signature


def predict_feeds(body: Any, *, signature: Signature) -> tuple[dict[str, np.ndarray], str]:
    """Feeds from `{"instances": [...]}` (row format) or `{"inputs": ...}` (columnar); and which."""
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object with 'instances' or 'inputs'.")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise InvalidInput("Send either 'instances' or 'inputs', not both.", code="ambiguous_body")
    if not has_instances and not has_inputs:
        raise InvalidInput("The body needs 'instances' (rows) or 'inputs' (columns).", param="instances")
    if body.get("signature_name", DEFAULT_SIGNATURE) != DEFAULT_SIGNATURE:
        # TF-Serving refuses a signature the model lacks; an ONNX model has one, answering it instead would
        # hand the client another computation than it named.
        raise InvalidInput(
            f"This model has one signature, '{DEFAULT_SIGNATURE}'; leave out 'signature_name' or send that.",
            param="signature_name",
        )
    specs = _input_specs(signature)
    if has_instances:
        return _instances_feeds(body["instances"], specs), "instances"
    return _columnar_feeds(body["inputs"], specs), "inputs"


def _instances_feeds(instances: Any, specs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows.", param="instances")
    names = list(specs)
    keyed = isinstance(instances[0], dict) and not _is_b64(instances[0])  # a b64 value is not a keyed row
    if not keyed and len(names) > 1:
        raise InvalidInput(
            f"This model has several inputs ({', '.join(names)}): each instance must be an object keyed by input name.",
            param="instances",
        )
    if keyed:
        columns: dict[str, list[Any]] = {}
        for index, row in enumerate(instances):
            if not isinstance(row, dict):
                raise InvalidInput("Every instance must have the same form (all objects).", param=f"instances.{index}")
            for key in row:
                if key not in specs:
                    raise InvalidInput(
                        f"Unknown input '{key}'; this model's inputs are: {', '.join(names)}.",
                        param=f"instances.{index}.{key}",
                    )
            for name in names:
                if name not in row:
                    raise InvalidInput(f"Instance {index} lacks input '{name}'.", param=f"instances.{index}.{name}")
                columns.setdefault(name, []).append(row[name])
    else:
        columns = {names[0]: instances}
    return {
        name: _predict_array(values, spec=specs[name], param=f"instances.{name}") for name, values in columns.items()
    }


def _columnar_feeds(inputs: Any, specs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    names = list(specs)
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {
            name: _predict_array(
                value, spec=specs.get(name, {"name": name, "datatype": "FP32"}), param=f"inputs.{name}"
            )
            for name, value in inputs.items()
        }
    if len(names) > 1:
        raise InvalidInput(
            f"This model has several inputs ({', '.join(names)}): 'inputs' must be an object keyed by input name.",
            param="inputs",
        )
    return {names[0]: _predict_array(inputs, spec=specs[names[0]], param="inputs")}


def _predict_array(data: Any, *, spec: dict[str, Any], param: str) -> np.ndarray:
    """`to_array` for `:predict`, where a string may come as TF-Serving's `{"b64": "<base64>"}`."""
    name, datatype = spec["name"], spec["datatype"]
    if datatype == "BYTES":
        data = _decode_b64(data, name=name, param=param)
    return to_array(data, datatype=datatype, name=name, param=param)


def _is_b64(value: Any) -> bool:
    """TF-Serving's form of a binary string; a string value tells it from a row keyed by an input named b64."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


_MAX_DEPTH = 64  # numpy's most dimensions: `to_array` refuses anything nested deeper


def _decode_b64(data: Any, *, name: str, param: str, depth: int = 0) -> Any:
    """Every `{"b64": ...}` in `data` as the text it encodes. ONNX Runtime's strings are text, so the bytes
    must be UTF-8 (as the binary BYTES of the v2 face must be). Lists deeper than any tensor are left
    as they are (for `to_array` to refuse), not walked to Python's recursion limit."""
    if isinstance(data, list):
        if depth >= _MAX_DEPTH:
            return data
        return [_decode_b64(item, name=name, param=param, depth=depth + 1) for item in data]
    if not _is_b64(data):
        return data
    try:
        raw = base64.b64decode(data["b64"], validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII character
        raise InvalidInput(f"Input '{name}' has a 'b64' value that is not valid base64.", param=param) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"Input '{name}' has a 'b64' value that is not UTF-8 text once decoded.", param=param
        ) from None


def predict_response(outputs: Mapping[str, np.ndarray], *, form: str, instances: int | None = None) -> Any:
    """`predictions` (one entry per row) for instances, `outputs` (columns) for inputs. With `instances`
    (the request's, `instances_of`), an output that has not one entry per instance cannot be split into
    `predictions`."""
    names = list(outputs)
    if form == "instances" and instances is not None:
        _require_rows(outputs, rows=instances)
    if form == "inputs":
        if len(names) == 1:
            return _jsonable(outputs[names[0]])
        return {name: _jsonable(value) for name, value in outputs.items()}
    if len(names) == 1:
        return _jsonable(outputs[names[0]])
    columns = {name: _jsonable(value) for name, value in outputs.items()}
    rows = len(next(iter(columns.values())))
    return [{name: columns[name][i] for name in names} for i in range(rows)]


def instances_of(feeds: Mapping[str, np.ndarray]) -> int | None:
    """How many instances checked row-form feeds hold: every feed's first dimension (the model's
    own row count, which `check_feeds` gives, is 1 for a model without a dynamic first dimension)."""
    return next((int(array.shape[0]) for array in feeds.values() if array.ndim), None)


def _require_rows(outputs: Mapping[str, np.ndarray], *, rows: int) -> None:
    """As TF-Serving: the row form needs every output's first dimension to be the request's rows; an
    aggregate (a scalar, or a fixed-size output) only fits the columnar form."""
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise InvalidInput(
                f"Output '{name}' has shape {list(array.shape)}, not one entry per row ({rows}), so it cannot be "
                "answered as 'predictions'; send the columnar form ('inputs') to get it whole.",
                code="output_not_per_row",
                param="instances",
            )


def _jsonable(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in ("O", "S"):
        return np.vectorize(_text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# --- Open Inference Protocol v2 ------------------------------------------------------------------


def split_binary_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary tail of a request using the binary tensor extension."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length must be an integer.") from None
    if length < 0:
        raise InvalidInput("Inference-Header-Content-Length must be a non-negative integer.")
    if length > len(body):
        raise InvalidInput("Inference-Header-Content-Length is larger than the body.")
    return body[:length], body[length:]


def oip_feeds(request: Any, binary: bytes, *, signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInput("The request needs a non-empty 'inputs' list.")
    if "id" in request and not isinstance(request["id"], str):
        raise InvalidInput("'id' must be a string.")
    specs = _input_specs(signature)
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"inputs[{index}] must be an object with a 'name'.")
        name = tensor["name"]
        if name not in specs:
            raise InvalidInput(f"Unknown input '{name}'; this model's inputs are: {', '.join(specs)}.")
        if name in feeds:
            raise InvalidInput(f"Input '{name}' is given twice.")
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if datatype is None:
            raise InvalidInput(f"Input '{name}' needs a 'datatype' ({specs[name]['datatype']}).")
        if datatype != specs[name]["datatype"]:
            raise InvalidInput(f"Input '{name}' has datatype {datatype}; the model expects {specs[name]['datatype']}.")
        # `type(...) is int`: JSON true/false are Python bools, which isinstance(_, int) would take as 1/0.
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInput(f"Input '{name}' needs a 'shape' of non-negative integers.")
        if len(shape) != len(expected := specs[name]["shape"]):  # also before numpy's 64-dimension limit
            raise InvalidInput(f"Input '{name}' has shape {shape}; the model expects {_shape_text(expected)}.")
        size = math.prod(shape)
        parameters = tensor.get("parameters") or {}
        binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if binary_size is not None:
            if type(binary_size) is not int or binary_size < 0:
                raise InvalidInput(f"Input '{name}' needs a 'binary_data_size' that is a non-negative integer.")
            if "data" in tensor:
                raise InvalidInput(f"Input '{name}' has both 'data' and 'binary_data_size'; send one.")
            if offset + binary_size > len(binary):
                raise InvalidInput(f"Input '{name}' has a binary_data_size beyond the request body.")
            chunk = binary[offset : offset + binary_size]
            offset += binary_size
            array = _from_binary(chunk, datatype=datatype, size=size, name=name)
        else:
            if "data" not in tensor:
                raise InvalidInput(f"Input '{name}' has no 'data'.")
            array = to_array(tensor["data"], datatype=datatype, name=name, param=name)
            if array.size != size:
                raise InvalidInput(f"Input '{name}' has {array.size} elements; shape {shape} needs {size}.")
            if array.ndim > 1 and list(array.shape) != shape:
                raise InvalidInput(
                    f"Input '{name}' has nested data of shape {list(array.shape)}; its 'shape' says {shape} "
                    "(send the data flat, or nested as the shape says)."
                )
        feeds[name] = array.reshape(shape)
    if offset != len(binary):
        raise InvalidInput(
            f"The body has {len(binary) - offset} bytes after the binary tensors its inputs' binary_data_size "
            "values account for."
        )
    return feeds


def _from_binary(chunk: bytes, *, datatype: str, size: int, name: str) -> np.ndarray:
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise InvalidInput(f"Input '{name}' has a truncated BYTES element.")
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > len(chunk):
                raise InvalidInput(f"Input '{name}' has a truncated BYTES element.")
            try:
                items.append(chunk[pos : pos + length].decode("utf-8"))
            except UnicodeDecodeError:  # replacing it would run the model on text the client never sent
                raise InvalidInput(f"Input '{name}' has a BYTES element that is not valid UTF-8 text.") from None
            pos += length
        if len(items) != size:
            raise InvalidInput(f"Input '{name}' has {len(items)} elements; its shape needs {size}.")
        return np.array(items, dtype=object)
    dtype = OIP_TO_NUMPY[datatype]
    if len(chunk) != size * dtype.itemsize:
        raise InvalidInput(f"Input '{name}' has {len(chunk)} bytes; shape and datatype need {size * dtype.itemsize}.")
    if datatype == "BOOL":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise InvalidInput(f"Input '{name}' has BOOL bytes other than 0 and 1.")
        return raw.view(np.bool_)
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)


def _flag(params: Any, name: str, default: bool) -> bool:
    """A boolean OIP parameter: absent is `default`, anything but true/false a 400 (not truthiness)."""
    value = params.get(name, default) if isinstance(params, dict) else default
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false.")
    return value


def requested_outputs(request: dict[str, Any], *, available: list[str]) -> list[tuple[str, bool]]:
    """(name, as_binary) for each output to return, honouring the `outputs` filter. An empty list asks
    for nothing in particular, so, as in Triton, every output comes back."""
    default_binary = _flag(request.get("parameters"), "binary_data_output", False)
    wanted = request.get("outputs")
    if wanted is None or wanted == []:
        return [(name, default_binary) for name in available]
    if not isinstance(wanted, list):
        raise InvalidInput("'outputs' must be a list.")
    result: list[tuple[str, bool]] = []
    for index, item in enumerate(wanted):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a 'name'.")
        if item["name"] not in available:
            raise InvalidInput(f"Unknown output '{item['name']}'; this model's outputs are: {', '.join(available)}.")
        if any(name == item["name"] for name, _ in result):
            raise InvalidInput(f"Output '{item['name']}' is requested twice.")
        if isinstance(item.get("parameters"), dict) and "classification" in item["parameters"]:
            # Triton's classification extension (tritonclient's `class_count`), which `GET /v2` does not list:
            # answering the raw tensor instead would hand the client another shape and datatype than it asked.
            raise InvalidInput(
                f"Output '{item['name']}' asks for classification (class_count), an extension this server does not "
                "offer; ask for the output itself and rank its values."
            )
        result.append((item["name"], _flag(item.get("parameters"), "binary_data", default_binary)))
    return result


def oip_outputs(
    outputs: Mapping[str, np.ndarray], wanted: list[tuple[str, bool]]
) -> tuple[list[dict[str, Any]], bytes]:
    """Output tensors as OIP JSON (flat data) and, for binary ones, the concatenated raw bytes."""
    tensors, blobs = [], []
    for name, as_binary in wanted:
        array = outputs[name]
        datatype = oip_datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if as_binary:
            raw = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _jsonable(array.reshape(-1))
        tensors.append(entry)
    return tensors, b"".join(blobs)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
