"""The parity gate publishes only variants within tolerance, and says why it refused one."""

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge import builder
from edge.models import Bundle

from .conftest import build_now, zip_members


def _broken_int8(src: Path, work: Path) -> builder.Built:
    """The real int8 build, then its first weight matrix shuffled: it runs, but answers wrongly."""
    built = builder.build_int8(src, work)
    model = onnx.load(str(built.runnable))
    weight = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).shape[0] if t.dims else 0)
    array = numpy_helper.to_array(weight).copy()
    np.random.default_rng(0).shuffle(array)
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(built.runnable))
    return built


def test_it_refuses_a_variant_outside_tolerance_and_says_why(digits, monkeypatch):
    monkeypatch.setitem(builder.BUILDERS, "int8", _broken_int8)
    bundle = build_now(digits)
    assert bundle.status == Bundle.Status.READY
    int8 = bundle.report["int8"]
    assert int8["status"] == "rejected"
    assert int8["reason"].startswith("parity gate: output 'label': label agreement")
    assert int8["parity"]["outputs"]["label"]["label_agreement"] < 0.99
    assert "files" not in int8
    members = zip_members(bundle)
    assert not any(path.startswith("models/int8/") for path in members)
    assert bundle.report["fp32"]["status"] == "published"


def test_it_fails_the_bundle_when_no_variant_passes(digits, monkeypatch):
    monkeypatch.setitem(builder.BUILDERS, "int8", _broken_int8)
    bundle = build_now(digits, ["int8"])
    assert bundle.status == Bundle.Status.FAILED
    assert bundle.reason.startswith("no variant could be published (int8: parity gate:")
    assert not bundle.file
    assert bundle.report["int8"]["status"] == "rejected"
    assert bundle.report["int8"]["parity"]["outputs"]["label"]["label_agreement"] < 0.99
    assert bundle.report["fp32"] == {"status": "not_requested", "reason": "not requested"}


def test_it_reports_a_variant_that_does_not_apply(iris):
    bundle = build_now(iris, ["fp32", "int8"])
    assert bundle.report["int8"]["status"] == "skipped"
    assert "MatMul" in bundle.report["int8"]["reason"]
    assert bundle.report["ort"] == {"status": "not_requested", "reason": "not requested"}


def test_it_holds_fp32_to_a_tight_tolerance_on_regressors(diabetes):
    bundle = build_now(diabetes)
    tolerances = bundle.manifest["golden"]["tolerances"]
    assert tolerances["fp32"] == {"max_relative_error": 1e-4, "min_label_agreement": 1.0}
    assert bundle.report["fp32"]["parity"]["outputs"]["variable"]["max_relative_error"] <= 1e-4
