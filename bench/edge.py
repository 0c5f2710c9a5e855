"""Edge bundle benchmark: size, build time and run.py latency for every variant of the demo models.

For each model and each variant, a bundle holding only that variant is built (in process, on a
throw-away SQLite database), verified with run.py's own code and timed with run.py's Runner on one
row and on 64 rows. Ratios are against the same model's fp32 bundle, measured in the same run.

Bar: the digits MLP's int8 bundle is at most 0.35x its fp32 bundle, with label agreement >= 99% on
the golden inputs. Exit status 1 when the bar is missed.

    make bench-edge            # or: .venv/bin/python bench/edge.py [--repeat 200]
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZE_BAR = 0.35
AGREEMENT_BAR = 0.99


def django_setup(work: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "apiservice.settings"
    os.environ["MODELMETER_VAR_DIR"] = str(work / "var")
    os.environ["MEDIA_ROOT"] = str(work / "media")
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'bench.sqlite3'}"
    os.environ["REDIS_URL"] = ""
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"  # the build runs here, in process
    os.environ["LOG_LEVEL"] = "WARNING"
    for name in ("EDGE_SIGNING_KEY", "EDGE_SIGNING_KEY_FILE"):
        os.environ.pop(name, None)  # a throw-away development key under the temporary VAR_DIR
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def models() -> dict[str, bytes]:
    from models_registry import demo_models

    return {
        "iris": demo_models.iris_classifier(),
        "diabetes": demo_models.diabetes_regressor(),
        "forest": demo_models.diabetes_forest(),
        "dense-mlp": demo_models.dense_mlp(),
        "digits-mlp": demo_models.digits_mlp(),
    }


def load_runner(folder: Path) -> Any:
    """The bundle's run.py as a module, without caching its bytecode in `folder/__pycache__/`: a file the
    manifest does not list would fail the verification that follows."""
    spec = importlib.util.spec_from_file_location(f"edge_run_{folder.name}", folder / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def timed(run: Any, feeds: dict[str, Any], repeat: int) -> float:
    run(feeds)  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(feeds)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def measure(bundle: Any, variant: str, work: Path, public_pem: str, repeat: int) -> dict[str, Any]:
    import numpy as np

    folder = work / "extract" / bundle.public_id
    with bundle.file.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        archive.extractall(folder)
    run_py = load_runner(folder)
    local = run_py.Bundle(folder)
    local.verify(run_py.load_public_key(public_pem))
    runner = run_py.Runner(local, variant)
    golden = run_py.tensors(json.loads((folder / "golden/inputs.json").read_text())["inputs"])
    one = {name: value[:1] for name, value in golden.items()}
    many = {name: np.resize(value, (64, *value.shape[1:])) for name, value in golden.items()}
    parity = bundle.report[variant].get("parity", {}).get("outputs", {})
    agreement = [m["label_agreement"] for m in parity.values() if "label_agreement" in m]
    error = [m["max_relative_error"] for m in parity.values() if "max_relative_error" in m]
    return {
        "size_bytes": bundle.size_bytes,
        "build_s": bundle.build_seconds,
        "latency_1_us": timed(runner.run, one, repeat),
        "latency_64_us": timed(runner.run, many, max(repeat // 4, 10)),
        "label_agreement": min(agreement) if agreement else None,
        "max_relative_error": max(error) if error else None,
    }


def run(repeat: int) -> int:
    from edge import keys, services
    from models_registry.services import model_get_or_create, model_version_register

    work = Path(os.environ["MODELMETER_VAR_DIR"]).parent
    public_pem = keys.public_keys()[0].pem
    results: dict[str, dict[str, Any]] = {}
    for name, content in models().items():
        version = model_version_register(model=model_get_or_create(name=name), content=content)
        results[name] = {}
        for variant in ("fp32", "int8", "ort"):
            bundle = services.bundle_request(version=version, variants=[variant])  # built eagerly
            bundle.refresh_from_db()
            if bundle.status != "ready":
                results[name][variant] = {"status": "not built", "reason": bundle.reason}
                continue
            results[name][variant] = {"status": "published", **measure(bundle, variant, work, public_pem, repeat)}
    return report(results)


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def report(results: dict[str, dict[str, Any]]) -> int:
    header = (
        f"{'model':<11}{'variant':<8}{'bundle':>10}{'size':>7}{'build s':>9}{'1 row us':>10}{'ratio':>7}"
        f"{'64 rows us':>12}{'ratio':>7}{'labels':>8}{'rel err':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, variants in results.items():
        base = variants.get("fp32", {})
        for variant, row in variants.items():
            if row["status"] != "published":
                print(f"{name:<11}{variant:<8}  not built: {row['reason'][:90]}")
                continue
            labels = f"{row['label_agreement']:.3f}" if row["label_agreement"] is not None else "-"
            error = f"{row['max_relative_error']:.1e}" if row["max_relative_error"] is not None else "-"
            print(
                f"{name:<11}{variant:<8}{row['size_bytes']:>10}{_ratio(row['size_bytes'], base.get('size_bytes')):>7}"
                f"{row['build_s']:>9.2f}{row['latency_1_us']:>10.1f}"
                f"{_ratio(row['latency_1_us'], base.get('latency_1_us')):>7}{row['latency_64_us']:>12.1f}"
                f"{_ratio(row['latency_64_us'], base.get('latency_64_us')):>7}{labels:>8}{error:>9}"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge.json").write_text(json.dumps(results, indent=2))
    digits = results["digits-mlp"]
    int8, fp32 = digits.get("int8", {}), digits.get("fp32", {})
    if int8.get("status") != "published" or fp32.get("status") != "published":
        print("\nBAR: FAIL (digits MLP int8 or fp32 bundle not built)")
        return 1
    size_ratio = int8["size_bytes"] / fp32["size_bytes"]
    agreement = int8["label_agreement"]
    passed = size_ratio <= SIZE_BAR and agreement >= AGREEMENT_BAR
    print(
        f"\nBAR: digits MLP int8 bundle = {size_ratio:.3f}x fp32 (<= {SIZE_BAR}), "
        f"label agreement {agreement:.4f} (>= {AGREEMENT_BAR}): {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per single-row measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        django_setup(Path(tmp))
        return run(args.repeat)


if __name__ == "__main__":
    sys.exit(main())
