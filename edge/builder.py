"""Building a bundle's contents: variants, golden data, the parity gate, manifest, signature, zip.

Everything ONNX Runtime does here goes through `inference.runtime` (the one module importing it).
"""

import logging
import string
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from django.conf import settings

from apiservice.errors import APIError
from inference import runtime
from inference.services import predict, servable_from_version
from inference.tensors import check_feeds
from models_registry.models import ModelVersion
from models_registry.selectors import model_version_local_path

from . import keys, packaging, parity
from .models import VARIANTS

logger = logging.getLogger(__name__)

FORMAT = "modelmeter-edge-bundle"
GOLDEN_MAX_ROWS = 100_000  # shipped sample rows travel in every bundle: more is not a sample
FORMAT_VERSION = 1
TEMPLATES = Path(__file__).resolve().parent / "bundle_files"


class VariantSkipped(Exception):
    """A variant that does not apply to this model (reported with the reason, never silently missing)."""


class BuildFailed(Exception):
    """The bundle as a whole cannot be built; the message is shown to the customer, with the per-variant
    report when the variants were tried."""

    def __init__(self, message: str, *, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


@dataclass
class Built:
    files: dict[str, Path]  # path inside the bundle -> local file
    runnable: Path  # the file ONNX Runtime loads for this variant


@dataclass
class VariantOutcome:
    status: str  # published | rejected | skipped | not_requested
    reason: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    build_seconds: float | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.parity is not None:
            out["parity"] = self.parity
        if self.status == "published":
            out["files"] = sorted(self.files)
        return out


def build_fp32(src: Path, work: Path) -> Built:
    out = work / "fp32.onnx"
    runtime.optimize_offline(src, out)
    return Built(files={"models/fp32/model.onnx": out}, runnable=out)


def build_int8(src: Path, work: Path) -> Built:
    applies_to = runtime.dynamic_quantization_op_types()
    ops = {node.op_type for node in onnx.load(str(src), load_external_data=False).graph.node}
    if not ops & applies_to:
        raise VariantSkipped(
            "dynamic quantisation does not apply: the model has none of "
            f"{', '.join(sorted(applies_to))} (it uses {', '.join(sorted(ops))})"
        )
    out = work / "int8.onnx"
    runtime.quantize_dynamic_int8(src, out)
    quantized = {node.op_type for node in onnx.load(str(out)).graph.node} & runtime.QUANTIZED_OP_TYPES
    if not quantized:
        raise VariantSkipped("dynamic quantisation left every operator in float (nothing to quantise)")
    return Built(files={"models/int8/model.onnx": out}, runnable=out)


def build_ort(src: Path, work: Path) -> Built:
    model, config = runtime.convert_to_ort_format(src, work / "ort")
    # The converter names the model by its absolute (temporary) path in a comment: no local paths leak.
    lines = config.read_text().splitlines()
    config.write_text(
        "".join(("# - models/ort/model.ort" if line.startswith("# - ") else line) + "\n" for line in lines)
    )
    return Built(files={"models/ort/model.ort": model, "models/ort/required_operators.config": config}, runnable=model)


# Tests replace an entry to prove the parity gate refuses a broken variant.
BUILDERS: dict[str, Callable[[Path, Path], Built]] = {"fp32": build_fp32, "int8": build_int8, "ort": build_ort}


GENERATED = "generated (seed 0)"


def golden_inputs(version: ModelVersion, src: Path) -> tuple[dict[str, np.ndarray], str]:
    """The publisher's sample rows from the model's metadata when present, else seeded generated rows."""
    model = onnx.load(str(src), load_external_data=False)
    shipped = {p.key: p.value for p in model.metadata_props}.get(parity.GOLDEN_METADATA_KEY)
    if shipped:
        try:
            feeds = parity.inputs_from_metadata(shipped, version.signature)
            # Rows the model cannot take (a wrong width, a bare row) would fail the server's own run.
            check_feeds(
                feeds, signature=version.signature, max_rows=GOLDEN_MAX_ROWS, nan_policy="reject", param_prefix=""
            )
            return feeds, "model metadata"
        except (ValueError, KeyError, TypeError, APIError) as exc:
            logger.warning("ignoring unusable %s in %s: %s", parity.GOLDEN_METADATA_KEY, version, exc)
    return parity.generated_inputs(version.signature, settings.EDGE_GOLDEN_ROWS), GENERATED


def golden_data(version: ModelVersion, src: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Golden inputs, the server's outputs for them, and their source. Generated rows whose dynamic
    dimensions past the first are 1 may be refused when the model runs (a 3x3 convolution on a dynamic-size
    image): then they are generated as wide as the validation sample's widest (`runtime.SAMPLE_SIZES`)."""
    servable = servable_from_version(version)
    golden_in, source = golden_inputs(version, src)
    try:
        return golden_in, predict(servable=servable, feeds=golden_in), source
    except APIError:  # the model refused these inputs when it ran
        dynamic = any(dim < 0 for spec in version.signature["inputs"] for dim in spec["shape"][1:])
        if source != GENERATED or not dynamic:
            raise
    wider = parity.generated_inputs(version.signature, settings.EDGE_GOLDEN_ROWS, size=runtime.SAMPLE_SIZES[-1])
    return wider, predict(servable=servable, feeds=wider), source


def _without_golden(src: Path, out: Path) -> Path:
    """The source without its shipped sample rows (they travel once, in golden/, not in every model)."""
    model = onnx.load(str(src), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key != parity.GOLDEN_METADATA_KEY]
    if len(kept) == len(model.metadata_props):
        return src
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(out))
    return out


def _variant(
    name: str,
    src: Path,
    work: Path,
    golden_in: dict[str, np.ndarray],
    golden_out: dict[str, np.ndarray],
    tolerance: parity.Tolerance,
) -> VariantOutcome:
    started = time.perf_counter()
    try:
        built = BUILDERS[name](src, work)
    except VariantSkipped as exc:
        return VariantOutcome(status="skipped", reason=str(exc))
    except Exception as exc:  # a converter's failure is a report line, not a failed bundle
        logger.warning("variant %s failed to build", name, exc_info=True)
        return VariantOutcome(status="skipped", reason=f"could not be built: {type(exc).__name__}: {exc}"[:500])
    seconds = time.perf_counter() - started
    try:
        verdict = parity.compare(golden_out, runtime.run_model_file(built.runnable, golden_in), tolerance)
    except Exception as exc:
        verdict = {"passed": False, "outputs": {}, "failures": [f"could not run: {type(exc).__name__}: {exc}"[:500]]}
    if not verdict["passed"]:
        reason = "parity gate: " + "; ".join(verdict["failures"])
        return VariantOutcome(status="rejected", reason=reason, parity=verdict, build_seconds=seconds)
    return VariantOutcome(status="published", files=built.files, parity=verdict, build_seconds=seconds)


@dataclass
class Assembled:
    content: bytes
    manifest: dict[str, Any]
    key_id: str


def bundle_assemble(
    *,
    version: ModelVersion,
    variants: list[str],
    bundle_id: str,
    built_at: datetime,
    progress: Callable[[int], None] = lambda percent: None,
) -> Assembled:
    src = model_version_local_path(version=version)
    golden_in, golden_out, golden_source = golden_data(version, src)
    classifier = parity.is_classifier(version.signature)
    tolerances = parity.tolerances_for(
        is_classifier=classifier,
        int8_relative_error=settings.EDGE_INT8_MAX_RELATIVE_ERROR,
        int8_label_agreement=settings.EDGE_INT8_MIN_LABEL_AGREEMENT,
    )
    progress(10)
    outcomes: dict[str, VariantOutcome] = {}
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        source = _without_golden(src, Path(tmp) / "source.onnx")
        for index, name in enumerate(VARIANTS):
            if name in variants:
                outcomes[name] = _variant(name, source, Path(tmp), golden_in, golden_out, tolerances[name])
            else:
                outcomes[name] = VariantOutcome(status="not_requested", reason="not requested")
            progress(10 + 25 * (index + 1))
        published = [name for name in VARIANTS if outcomes[name].status == "published"]
        if not published:
            lines = "; ".join(f"{n}: {o.reason}" for n, o in outcomes.items() if n in variants)
            report = {name: outcome.report() for name, outcome in outcomes.items()}
            raise BuildFailed(f"no variant could be published ({lines})", report=report)
        members = {path: local.read_bytes() for name in published for path, local in outcomes[name].files.items()}
    members["golden/inputs.json"] = packaging.canonical_json({"inputs": parity.tensors_json(golden_in)})
    members["golden/outputs.json"] = packaging.canonical_json({"outputs": parity.tensors_json(golden_out)})
    members["run.py"] = (TEMPLATES / "run.py").read_bytes()
    members["README.md"] = _readme(version, published)
    manifest = _manifest(
        version=version,
        bundle_id=bundle_id,
        built_at=built_at,
        variants=variants,
        outcomes=outcomes,
        published=published,
        members=members,
        golden_source=golden_source,
        classifier=classifier,
        tolerances=tolerances,
        golden_rows=_rows(golden_in),
    )
    manifest_bytes = packaging.canonical_json(manifest)
    signature, key_id = keys.sign(manifest_bytes)
    members["manifest.json"] = manifest_bytes
    members["manifest.sig"] = signature
    return Assembled(content=packaging.zip_bytes(members), manifest=manifest, key_id=key_id)


def _rows(feeds: dict[str, np.ndarray]) -> int:
    """Rows of the golden inputs: the first dimension, or 1 for a model whose input is a scalar (rank 0)."""
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def _manifest(
    *,
    version: ModelVersion,
    bundle_id: str,
    built_at: datetime,
    variants: list[str],
    outcomes: dict[str, VariantOutcome],
    published: list[str],
    members: dict[str, bytes],
    golden_source: str,
    classifier: bool,
    tolerances: dict[str, parity.Tolerance],
    golden_rows: int,
) -> dict[str, Any]:
    variant_of = {path: name for name, o in outcomes.items() for path in o.files if name in published}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bundle_id": bundle_id,
        "build_time": built_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_id": keys.current_key_id(),
        "model": {
            "name": version.model.name,
            "version": version.number,
            "source_sha256": version.sha256,
            "opset": version.opset,
            "producer": version.producer,
        },
        "onnxruntime": {"minimum_version": runtime.ORT_VERSION, "built_with": runtime.ORT_VERSION},
        "signature": version.signature,
        "labels": version.labels,
        "task": "classification" if classifier else "regression",
        "variants_requested": variants,
        "default_variant": published[0],
        "variants": {name: outcome.report() for name, outcome in outcomes.items()},
        "golden": {
            "inputs": "golden/inputs.json",
            "outputs": "golden/outputs.json",
            "rows": golden_rows,
            "source": golden_source,
            "tolerances": {name: tolerances[name].as_dict() for name in VARIANTS},
        },
        "files": [
            {"path": path, "size": len(data), "sha256": packaging.sha256_of(data), "variant": variant_of.get(path)}
            for path, data in sorted(members.items())
        ],
    }


def _readme(version: ModelVersion, published: list[str]) -> bytes:
    template = string.Template((TEMPLATES / "README.md.tmpl").read_text())
    return template.substitute(
        model=version.model.name, version=version.number, variants=", ".join(published), default=published[0]
    ).encode()
