"""Golden inputs/outputs and the parity gate (numpy only; `bundle_files/run.py` applies the same rule).

Rule, per output of a variant against the server's outputs on the golden inputs:
- label outputs (integers, strings, booleans): the share of equal values must be at least
  `min_label_agreement`;
- float outputs: `max|variant - server| / max(max|server|, 1e-6)` must be at most `max_relative_error`;
  that limit is null (reported, not gated) for a classifier's scores under int8, where the labels are
  the contract.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.datatypes import FLOAT_TYPES, OIP_TO_NUMPY, oip_datatype_of

GOLDEN_METADATA_KEY = "modelmeter.golden_inputs"
SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class Tolerance:
    max_relative_error: float | None
    min_label_agreement: float

    def as_dict(self) -> dict[str, Any]:
        return {"max_relative_error": self.max_relative_error, "min_label_agreement": self.min_label_agreement}


def tolerances_for(
    *, is_classifier: bool, int8_relative_error: float, int8_label_agreement: float
) -> dict[str, Tolerance]:
    exact = Tolerance(max_relative_error=1e-4, min_label_agreement=1.0)
    int8 = Tolerance(
        max_relative_error=None if is_classifier else int8_relative_error, min_label_agreement=int8_label_agreement
    )
    return {"fp32": exact, "ort": exact, "int8": int8}


def is_classifier(signature: Mapping[str, list[dict[str, Any]]]) -> bool:
    return any(spec["datatype"] not in FLOAT_TYPES for spec in signature.get("outputs", []))


def generated_inputs(
    signature: Mapping[str, list[dict[str, Any]]], rows: int, seed: int = 0, size: int = 1
) -> dict[str, np.ndarray]:
    """Seeded inputs for models that ship no sample rows: standard normal floats, 0/1 integers; dynamic
    dimensions past the first are `size`."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in signature["inputs"]:
        shape = [(rows if i == 0 else size) if d < 0 else d for i, d in enumerate(spec["shape"])]
        dtype = OIP_TO_NUMPY[spec["datatype"]]
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "a", dtype=object)
        elif dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def inputs_from_metadata(raw: str, signature: Mapping[str, list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    """Sample rows a publisher shipped in the model's metadata: `{"<input>": [[...], ...]}`."""
    given = json.loads(raw)
    feeds: dict[str, np.ndarray] = {}
    for spec in signature["inputs"]:
        feeds[spec["name"]] = np.asarray(given[spec["name"]], dtype=OIP_TO_NUMPY[spec["datatype"]])
    return feeds


def tensors_json(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """OIP-style tensors, in name order; floats keep their exact float32 value through JSON."""
    out = []
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        data = [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
        out.append({"name": name, "datatype": oip_datatype_of(array), "shape": list(array.shape), "data": data})
    return out


def tensors_from_json(tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {t["name"]: np.asarray(t["data"], dtype=OIP_TO_NUMPY[t["datatype"]]).reshape(t["shape"]) for t in tensors}


def compare(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tolerance: Tolerance
) -> dict[str, Any]:
    """Per-output metrics and a verdict: `{"passed": bool, "outputs": {...}, "failures": [...]}`."""
    outputs: dict[str, Any] = {}
    failures: list[str] = []
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or np.shape(got) != np.shape(want):
            failures.append(f"output '{name}' is missing or has shape {None if got is None else list(np.shape(got))}")
            continue
        if want.dtype.kind == "f":
            scale = max(float(np.max(np.abs(want))) if want.size else 0.0, SCALE_FLOOR)
            error = (
                float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) / scale if want.size else 0.0
            )
            outputs[name] = {"max_relative_error": error}
            limit = tolerance.max_relative_error
            if limit is not None and not error <= limit:
                failures.append(f"output '{name}': relative error {error:.3g} > {limit:g}")
        else:
            agreement = float(np.mean(np.asarray(got) == np.asarray(want))) if want.size else 1.0
            outputs[name] = {"label_agreement": agreement}
            if agreement < tolerance.min_label_agreement:
                failures.append(f"output '{name}': label agreement {agreement:.4f} < {tolerance.min_label_agreement:g}")
    return {"passed": not failures, "outputs": outputs, "failures": failures}
