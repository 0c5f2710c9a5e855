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
    if not shape:
        return value
    size = shape[0] if shape[0] and shape[0] > 0 else 1
    return [_tensor(shape[1:], value) for _ in range(size)]


def example_body(signature: dict[str, Any]) -> str:
    """`{"instances": [row]}`: one row of the right shape (dynamic dimensions as 1), pretty-printed."""
    inputs = signature.get("inputs") or []
    rows: list[Any] = []
    if len(inputs) == 1:
        spec = inputs[0]
        rows.append(_tensor(list(spec.get("shape") or [])[1:], _value(spec.get("datatype", "FP32"))))
    elif inputs:
        rows.append(
            {s["name"]: _tensor(list(s.get("shape") or [])[1:], _value(s.get("datatype", "FP32"))) for s in inputs}
        )
    return json.dumps({"instances": rows})
