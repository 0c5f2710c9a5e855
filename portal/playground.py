"""Example request bodies built from a version's signature, for the playground and its snippets."""

import json
from typing import Any


def _value(datatype: str) -> Any:
    kind = datatype.upper()
    if kind in {"BYTES", "STRING"}:
        return "text"
    if kind == "BOOL":
        return False
    if kind.startswith(("INT", "UINT")):
        return 1
    return 1.0


def _tensor(shape: list[int], value: Any) -> Any:
    """A tensor of `shape` filled with `value`; a dynamic dimension (-1) is 1, a fixed one (0 too) is kept."""
    if not shape:
        return value
    size = 1 if shape[0] < 0 else shape[0]
    return [_tensor(shape[1:], value) for _ in range(size)]


def _takes_rows(spec: dict[str, Any]) -> bool:
    """One `instances` row fits this input: it has a first dimension, dynamic or 1."""
    shape = list(spec.get("shape") or [])
    return bool(shape) and shape[0] in (-1, 1)


def example_body(signature: dict[str, Any]) -> str:
    """`{"instances": [row]}`: one row of the right shape (dynamic dimensions as 1). A model that takes no
    rows (a scalar input, a fixed first dimension other than 1) gets `{"inputs": {name: tensor}}` instead."""
    inputs = signature.get("inputs") or []
    if not all(_takes_rows(spec) for spec in inputs):
        columns = {s["name"]: _tensor(list(s.get("shape") or []), _value(s.get("datatype", "FP32"))) for s in inputs}
        return json.dumps({"inputs": columns})
    rows: list[Any] = []
    if len(inputs) == 1:
        spec = inputs[0]
        rows.append(_tensor(list(spec.get("shape") or [])[1:], _value(spec.get("datatype", "FP32"))))
    elif inputs:
        rows.append(
            {s["name"]: _tensor(list(s.get("shape") or [])[1:], _value(s.get("datatype", "FP32"))) for s in inputs}
        )
    return json.dumps({"instances": rows})
