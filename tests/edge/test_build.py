import json
import subprocess
import sys

import pytest

from edge.models import Bundle
from tests.conftest import register

from .conftest import build_now, extract, zip_members


@pytest.mark.parametrize(
    ("name", "kind", "int8_status"),
    [
        ("iris", "iris", "skipped"),
        ("diabetes", "diabetes", "skipped"),
        ("forest", "forest", "skipped"),
        ("mlp", "mlp", "skipped"),
    ],
)
def test_it_builds_a_bundle_for_each_demo_model(db, name, kind, int8_status):
    version = register(name, kind)
    bundle = build_now(version)
    assert bundle.status == Bundle.Status.READY, bundle.reason
    report = bundle.report
    assert report["fp32"]["status"] == "published"
    assert report["ort"]["status"] == "published"
    assert report["int8"]["status"] == int8_status
    assert "dynamic quantisation does not apply" in report["int8"]["reason"]
    members = zip_members(bundle)
    assert {
        "manifest.json",
        "manifest.sig",
        "run.py",
        "README.md",
        "golden/inputs.json",
        "golden/outputs.json",
        "models/fp32/model.onnx",
        "models/ort/model.ort",
        "models/ort/required_operators.config",
    } <= set(members)
    assert "models/int8/model.onnx" not in members
    manifest = json.loads(members["manifest.json"])
    assert manifest["model"] == {
        "name": name,
        "version": 1,
        "source_sha256": version.sha256,
        "opset": version.opset,
        "producer": version.producer,
    }
    assert manifest["signature"] == version.signature


def test_it_builds_and_publishes_int8_for_the_digits_mlp(digits):
    bundle = build_now(digits)
    assert bundle.status == Bundle.Status.READY, bundle.reason
    int8 = bundle.report["int8"]
    assert int8["status"] == "published", int8
    assert int8["parity"]["outputs"]["label"]["label_agreement"] >= 0.99
    manifest = bundle.manifest
    assert manifest["golden"]["rows"] == 128
    assert manifest["golden"]["source"] == "model metadata"
    assert manifest["task"] == "classification"
    sizes = {f["variant"]: f["size"] for f in manifest["files"] if f["path"].endswith("model.onnx")}
    assert sizes["int8"] < 0.35 * sizes["fp32"]


def test_it_does_nothing_when_a_build_task_is_delivered_twice(iris):
    from edge.services import bundle_build

    bundle = build_now(iris, ["fp32"])
    bundle_build(bundle_id=bundle.pk)
    bundle.refresh_from_db()
    assert (bundle.status, bundle.attempts) == ("ready", 1)


def test_it_takes_over_a_build_whose_worker_died(iris, settings):
    from datetime import timedelta

    from django.utils import timezone

    from edge.services import bundle_build, bundle_request

    bundle = bundle_request(version=iris, variants=["fp32"])
    Bundle.objects.filter(pk=bundle.pk).update(status="building", started_at=timezone.now(), attempts=1)
    bundle_build(bundle_id=bundle.pk)  # a live build: left alone
    assert Bundle.objects.get(pk=bundle.pk).status == "building"
    Bundle.objects.filter(pk=bundle.pk).update(
        started_at=timezone.now() - timedelta(seconds=settings.EDGE_BUILD_STALE_SECONDS + 1)
    )
    bundle_build(bundle_id=bundle.pk)
    bundle.refresh_from_db()
    assert (bundle.status, bundle.attempts) == ("ready", 2)


def test_it_copies_the_report_of_bundles_built_before_it_had_a_column(iris):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("edge.migrations.0002_bundle_report")
    bundle = build_now(iris, ["fp32"])
    Bundle.objects.filter(pk=bundle.pk).update(report={})
    migration.reports_from_manifests(apps, None)
    bundle.refresh_from_db()
    assert bundle.report == bundle.manifest["variants"]
    assert bundle.report["fp32"]["status"] == "published"


@pytest.mark.parametrize(
    "shipped",
    [{"input": [[5.1, 3.5, 1.4]]}, {"input": [5.1, 3.5, 1.4, 0.2]}, {"input": [["a", "b", "c", "d"]]}],
    ids=["three-features", "not-rows", "strings"],
)
def test_it_builds_on_generated_rows_when_the_shipped_golden_rows_do_not_fit_the_model(db, shipped):
    """Sample rows the model cannot run on were an 'internal error' failing the whole bundle."""
    import onnx

    from models_registry.services import model_get_or_create, model_version_register
    from tests.conftest import model_bytes

    model = onnx.load_from_string(model_bytes("iris"))
    onnx.helper.set_model_props(model, {"modelmeter.golden_inputs": json.dumps(shipped)})
    version = model_version_register(model=model_get_or_create(name="iris-rows"), content=model.SerializeToString())
    bundle = build_now(version, ["fp32"])
    assert bundle.status == Bundle.Status.READY, bundle.reason
    assert bundle.manifest["golden"]["source"] == "generated (seed 0)"


def test_it_builds_a_bundle_for_a_model_whose_input_is_a_scalar(db, key_file, tmp_path):
    """A rank-0 input has no rows to count: the build failed with 'internal error' (len() of a 0-d array)."""
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    version = model_version_register(model=model_get_or_create(name="negate"), content=onnx_factories.scalar())
    assert version.status == "ready", version.failure_reason

    bundle = build_now(version, ["fp32"])

    assert bundle.status == Bundle.Status.READY, bundle.reason
    assert bundle.manifest["golden"]["rows"] == 1
    outputs = json.loads(zip_members(bundle)["golden/outputs.json"])["outputs"]
    inputs = json.loads(zip_members(bundle)["golden/inputs.json"])["inputs"]
    assert outputs[0]["data"] == [-value for value in inputs[0]["data"]]
    verified = subprocess.run(
        [sys.executable, "run.py", "verify", "--public-key", str(key_file)],
        cwd=extract(bundle, tmp_path / "bundle"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr


def test_it_builds_a_bundle_for_a_model_whose_dynamic_dimensions_must_be_wider_than_one(db):
    """Generated golden rows made every dynamic dimension past the first 1: a 3x3 convolution on a
    dynamic-size image refused them and the build failed with 'internal error'."""
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    content = onnx_factories.conv_dynamic_height_width()
    version = model_version_register(model=model_get_or_create(name="edges"), content=content)

    bundle = build_now(version, ["fp32"])

    assert bundle.status == Bundle.Status.READY, bundle.reason
    inputs = json.loads(zip_members(bundle)["golden/inputs.json"])["inputs"]
    assert inputs[0]["shape"] == [64, 1, 32, 32]
