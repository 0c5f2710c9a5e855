"""run.py, executed as a subprocess on the bundle as a customer would run it."""

import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import build_now, extract, zip_members

RUN = [sys.executable, "run.py"]


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], cwd=folder, capture_output=True, text=True, timeout=120)


def verify_zip(runner: Path, zip_path: Path, key_file: Path) -> subprocess.CompletedProcess[str]:
    """`run.py --bundle <zip> verify`, with the run.py at `runner` (the zip itself is never unpacked)."""
    command = [sys.executable, str(runner), "--bundle", str(zip_path), "verify", "--public-key", str(key_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def iris_folder(iris, tmp_path):
    return extract(build_now(iris), tmp_path / "bundle")


def test_it_verifies_an_untouched_bundle(iris_folder, key_file):
    result = run(iris_folder, "verify", "--public-key", str(key_file))
    assert result.returncode == 0, result.stderr
    assert "OK: iris v1" in result.stdout


def test_it_verifies_the_zip_itself(iris, key_file, tmp_path):
    bundle = build_now(iris)
    zip_path = tmp_path / "bundle.zip"
    with bundle.file.open("rb") as handle:
        zip_path.write_bytes(handle.read())
    runner = Path(extract(bundle, tmp_path / "x")) / "run.py"
    result = verify_zip(runner, zip_path, key_file)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "manifest.json",
        "manifest.sig",
        "models/fp32/model.onnx",
        "models/ort/model.ort",
        "golden/outputs.json",
        "README.md",
    ],
)
def test_it_detects_a_one_byte_change_anywhere(iris_folder, key_file, path):
    target = iris_folder / path
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = run(iris_folder, "verify", "--public-key", str(key_file))
    assert result.returncode == 2
    assert "VERIFICATION FAILED" in result.stderr


def _rows_file(folder: Path, target: Path) -> Path:
    """The bundle's golden inputs as a JSON rows file at `target` (outside the bundle, as advised)."""
    inputs = json.loads((folder / "golden/inputs.json").read_text())["inputs"][0]
    target.write_text(json.dumps(np.asarray(inputs["data"]).reshape(inputs["shape"]).tolist()))
    return target


@pytest.mark.parametrize("planted", ["onnxruntime.py", "numpy/__init__.py", "json.py", "models/fp32/extra.onnx"])
def test_it_refuses_a_file_dropped_into_the_bundle_folder(iris_folder, key_file, tmp_path, planted):
    target = iris_folder / planted
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("raise SystemExit('pwned')\n")
    rows = _rows_file(iris_folder, tmp_path / "rows.json")
    for command in (["verify"], ["predict", "--input", str(rows)]):
        result = run(iris_folder, *command, "--public-key", str(key_file))
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"files not in the manifest: ['{planted}']" in result.stderr
        assert "pwned" not in result.stdout + result.stderr


def test_it_refuses_a_linked_folder_in_the_bundle_folder(iris_folder, key_file, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (iris_folder / "extras").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = run(iris_folder, "verify", "--public-key", str(key_file))
    assert result.returncode == 2
    assert "files not in the manifest: ['extras']" in result.stderr


def test_it_lets_the_input_and_key_you_name_sit_in_the_bundle_folder(iris_folder, key_file):
    (iris_folder / "modelmeter.pem").write_bytes(key_file.read_bytes())
    _rows_file(iris_folder, iris_folder / "rows.json")
    result = run(iris_folder, "predict", "--public-key", "modelmeter.pem", "--input", "rows.json")
    assert result.returncode == 0, result.stderr
    assert run(iris_folder, "verify", "--public-key", "modelmeter.pem").returncode == 2  # rows.json: not named


def test_it_never_imports_modules_planted_beside_run_py(iris_folder, key_file, tmp_path):
    runner = tmp_path / "runner"
    runner.mkdir()
    (runner / "run.py").write_bytes((iris_folder / "run.py").read_bytes())
    for module in ("onnxruntime.py", "numpy.py", "cryptography.py", "argparse.py", "json.py", "zipfile.py"):
        (runner / module).write_text("raise SystemExit('pwned')\n")
    rows = _rows_file(iris_folder, tmp_path / "rows.json")
    outside = [sys.executable, str(runner / "run.py"), "--bundle", str(iris_folder)]
    result = subprocess.run(
        [*outside, "predict", "--public-key", str(key_file), "--input", str(rows)],
        cwd=runner,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["variant"] == "fp32"


def test_it_refuses_another_public_key(iris_folder, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = run(iris_folder, "verify", "--public-key", str(other))
    assert result.returncode == 2


def test_it_passes_its_own_golden_check_for_every_variant(digits, key_file, tmp_path):
    folder = extract(build_now(digits), tmp_path / "bundle")
    result = run(folder, "golden", "--public-key", str(key_file))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"fp32", "int8", "ort"}
    assert report["int8"]["outputs"]["label"]["label_agreement"] >= 0.99


@pytest.mark.parametrize("variant", ["fp32", "ort"])
def test_it_predicts_what_the_online_api_predicts_on_the_golden_inputs(iris, api, key_file, tmp_path, variant):
    folder = extract(build_now(iris), tmp_path / "bundle")
    inputs = json.loads((folder / "golden/inputs.json").read_text())["inputs"][0]
    rows = np.asarray(inputs["data"], dtype=np.float32).reshape(inputs["shape"]).tolist()
    (folder / "rows.json").write_text(json.dumps({"instances": rows}))
    result = run(folder, "predict", "--public-key", str(key_file), "--input", "rows.json", "--variant", variant)
    assert result.returncode == 0, result.stderr
    local = json.loads(result.stdout)["outputs"]
    online = api.post_json("/v1/models/iris/versions/1:predict", {"inputs": rows}).json()["outputs"]
    assert local["label"] == online["label"]
    np.testing.assert_allclose(
        np.asarray(local["probabilities"]), np.asarray(online["probabilities"]), rtol=1e-4, atol=1e-6
    )


def test_it_predicts_from_csv(diabetes, api, key_file, tmp_path):
    folder = extract(build_now(diabetes), tmp_path / "bundle")
    rows = [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.01], [0.0] * 10]
    (folder / "rows.csv").write_text("a,b,c,d,e,f,g,h,i,j\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    result = run(folder, "predict", "--public-key", str(key_file), "--input", "rows.csv")
    assert result.returncode == 0, result.stderr
    local = np.asarray(json.loads(result.stdout)["outputs"]["variable"])
    online = np.asarray(api.post_json("/v1/models/diabetes:predict", {"instances": rows}).json()["predictions"])
    np.testing.assert_allclose(local, online, rtol=1e-4)


def test_it_predicts_the_online_labels_with_the_int8_variant(digits, api, key_file, tmp_path):
    folder = extract(build_now(digits), tmp_path / "bundle")
    inputs = json.loads((folder / "golden/inputs.json").read_text())["inputs"][0]
    rows = np.asarray(inputs["data"], dtype=np.float32).reshape(inputs["shape"]).tolist()
    (folder / "rows.json").write_text(json.dumps(rows))
    result = run(folder, "predict", "--public-key", str(key_file), "--input", "rows.json", "--variant", "int8")
    assert result.returncode == 0, result.stderr
    local = json.loads(result.stdout)["outputs"]
    online = api.post_json("/v1/models/digits/versions/1:predict", {"inputs": rows}).json()["outputs"]
    agreement = np.mean(np.asarray(local["label"]) == np.asarray(online["label"]))
    assert agreement >= 0.99
    np.testing.assert_allclose(np.asarray(local["probabilities"]), np.asarray(online["probabilities"]), atol=0.05)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([[5.1, 3.5, 1.4]], "has shape [1, 3]; the model expects [N, 4]"),
        ([5.1, 3.5, 1.4, 0.2], "has shape [4]; the model expects [N, 4]"),
        ([[[5.1, 3.5, 1.4, 0.2]]], "has shape [1, 1, 4]; the model expects [N, 4]"),
        ([[5.1, 3.5, 1.4, 0.2], [5.1, 3.5]], "is ragged"),
        ([[10**30, 3, 1, 0]], "holds numbers out of range"),  # numpy keeps an int past 64 bits as an object
        ([["a", "b", "c", "d"]], "expects numbers (FP32)"),
        ({"inputs": {"pixels": [[1, 2, 3, 4]]}}, "unknown input(s) ['pixels'], missing input(s)"),
        ({"rows": [[5.1, 3.5, 1.4, 0.2]]}, "send rows (a list)"),
    ],
)
def test_it_refuses_an_input_the_model_cannot_take_as_bad_input(iris_folder, key_file, tmp_path, body, message):
    (tmp_path / "rows.json").write_text(json.dumps(body))
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(tmp_path / "rows.json"))
    assert result.returncode == 3, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rows.json", "[[5.1, 3.5, NaN, 0.2]]"),
        ("rows.json", '{"instances": [[5.1, Infinity, 1.4, 0.2]]}'),
        ("rows.json", "[[5.1, 3.5, 1e400, 0.2]]"),
        ("rows.csv", "5.1,3.5,1.4,0.2\n5.1,-inf,1.4,nan\n"),
    ],
)
def test_it_refuses_nan_and_infinity_unless_allowed(iris_folder, key_file, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    command = ["predict", "--public-key", str(key_file), "--input", str(tmp_path / name)]
    refused = run(iris_folder, *command)
    assert refused.returncode == 3
    assert "contains NaN or infinity" in refused.stderr
    assert "--allow-nan" in refused.stderr
    allowed = run(iris_folder, *command, "--allow-nan")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["variant"] == "fp32"


def test_it_predicts_every_row_of_a_csv_saved_with_a_byte_order_mark(iris_folder, key_file, tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the first row is data, not a header to drop."""
    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"\xef\xbb\xbf5.1,3.5,1.4,0.2\r\n6.7,3.0,5.2,2.3\r\n")
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(rows))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["label"] == ["setosa", "virginica"]


def test_it_reads_json_saved_with_a_byte_order_mark(iris_folder, key_file, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_bytes(b'\xef\xbb\xbf{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(rows))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["label"] == ["setosa"]


def test_it_refuses_an_input_that_is_not_utf8_as_bad_input(iris_folder, key_file, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_bytes("sépale,b,c,d\n5.1,3.5,1.4,0.2\n".encode("latin-1"))
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(rows))
    assert result.returncode == 3
    assert "not UTF-8" in result.stderr


def test_it_keeps_the_shape_of_string_outputs_as_the_online_api_does(db, api, key_file, tmp_path):
    """A [N, 2] string output came back as one flat list of 2N strings: rows could not be told apart."""
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    version = model_version_register(
        model=model_get_or_create(name="pairs"), content=onnx_factories.string_pairs(), aliases=["production"]
    )
    folder = extract(build_now(version), tmp_path / "bundle")
    rows = [["a", "b"], ["c", "d"]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    result = run(folder, "predict", "--public-key", str(key_file), "--input", str(tmp_path / "rows.json"))
    assert result.returncode == 0, result.stderr
    online = api.post_json("/v1/models/pairs:predict", {"inputs": rows}).json()["outputs"]
    assert json.loads(result.stdout)["outputs"]["pair_out"] == online == rows


def test_it_calls_a_bundle_path_that_does_not_exist_bad_usage_not_failed_verification(iris_folder, key_file, tmp_path):
    """A mistyped --bundle said VERIFICATION FAILED (exit 2), as if the bundle had been tampered with."""
    result = run(iris_folder, "--bundle", str(tmp_path / "iris.zip"), "verify", "--public-key", str(key_file))
    assert result.returncode == 3
    assert "VERIFICATION FAILED" not in result.stderr
    assert "no bundle at" in result.stderr


def test_it_names_a_missing_public_key_file(iris_folder, tmp_path):
    """A mistyped key file was read as a base64 key: 'Only base64 data is allowed'."""
    result = run(iris_folder, "verify", "--public-key", str(tmp_path / "modelmeter.pem"))
    assert result.returncode == 3
    assert "no public key file" in result.stderr


def test_it_says_a_csv_with_no_rows_of_numbers_has_none(iris_folder, key_file, tmp_path):
    """A semicolon-separated row was read as a header, leaving 'input has shape [0]' to puzzle over."""
    rows = tmp_path / "rows.csv"
    rows.write_text("5.1;3.5;1.4;0.2\n")
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(rows))
    assert result.returncode == 3
    assert "no rows of numbers" in result.stderr
    assert "shape [0]" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["verify"],
        ["check", "--public-key", "modelmeter.pem"],
        ["predict", "--public-key", "modelmeter.pem"],
        ["predict", "--public-key", "modelmeter.pem", "--input", "rows.csv", "--variant", "fp16"],
        ["verify", "--public-key", "modelmeter.pem", "--inputs", "rows.csv"],
    ],
)
def test_it_exits_bad_usage_not_failed_verification_on_a_mistyped_command_line(iris_folder, args):
    """argparse exits 2 on a usage error, which run.py documents as 'verification failed'."""
    result = run(iris_folder, *args)
    assert result.returncode == 3, result.stderr
    assert "usage: run.py" in result.stderr


def test_the_commands_in_the_bundles_readme_work_in_the_order_it_gives_them(iris_folder, public_key_pem, tmp_path):
    """The README had the key and rows.csv inside the bundle folder: verify and golden, which name no
    input, then refused rows.csv as a file not in the manifest (exit 2, as if tampered with)."""
    commands = [
        line.split()[1:]
        for line in (iris_folder / "README.md").read_text().splitlines()
        if line.strip().startswith("python run.py")
    ]
    assert [c[1] for c in commands] == ["verify", "golden", "predict"]
    for args in commands:  # the key and the inputs are where the README names them, before any command runs
        named = dict(zip(args[2::2], args[3::2], strict=False))
        (iris_folder / named["--public-key"]).write_bytes(public_key_pem)
        if "--input" in named:
            (iris_folder / named["--input"]).write_text("5.1,3.5,1.4,0.2\n")
    for args in commands:
        result = run(iris_folder, *args[1:])
        assert result.returncode == 0, (args, result.stderr)


def test_it_refuses_a_zip_that_stores_a_signed_file_twice(iris, key_file, tmp_path):
    """Python's zipfile reads the last copy of a name, which verified, while readers that stream a zip
    (or take the first copy) would run the other, unsigned one."""
    genuine = zip_members(build_now(iris))
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("models/fp32/model.onnx", b"not the signed model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
            for name, data in genuine.items():
                archive.writestr(name, data)
    runner = tmp_path / "run.py"
    runner.write_bytes(genuine["run.py"])
    result = verify_zip(runner, forged, key_file)
    assert result.returncode == 2, result.stdout
    assert "stored more than once" in result.stderr
    assert "models/fp32/model.onnx" in result.stderr


def test_it_refuses_a_zip_with_an_unlisted_entry_hidden_before_its_directory(iris, key_file, tmp_path):
    """zipfile and unzip read a zip through its directory and skip bytes put in front of the entries,
    but a reader that streams the entries (Java's ZipInputStream, say) takes what is there first."""
    genuine = build_now(iris)
    with genuine.file.open("rb") as handle:
        signed = handle.read()
    hidden = io.BytesIO()
    with zipfile.ZipFile(hidden, "w") as archive:
        archive.writestr("models/fp32/model.onnx", b"not the signed model")
    local_entry = hidden.getvalue()[: hidden.getvalue().rfind(b"PK\x01\x02")]  # without its own directory
    forged = tmp_path / "forged.zip"
    forged.write_bytes(local_entry + signed)
    runner = tmp_path / "run.py"
    runner.write_bytes(zip_members(genuine)["run.py"])
    result = verify_zip(runner, forged, key_file)
    assert result.returncode == 2, result.stdout
    assert "bytes outside its files, from byte 0" in result.stderr


@pytest.mark.parametrize(
    "body", [[[5.1, True, 1.4, 0.2]], [[5.1, 3.5, 1.4, 0.2], [False, 3.0, 5.2, 2.3]], [[1, 0, True, 2]]]
)
def test_it_refuses_booleans_among_numbers_as_the_online_api_does(iris_folder, key_file, tmp_path, body):
    """numpy reads `true` among numbers as 1.0; the online API refuses it, and so does run.py."""
    (tmp_path / "rows.json").write_text(json.dumps(body))
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(tmp_path / "rows.json"))
    assert result.returncode == 3, result.stdout
    assert "input 'input' expects numbers (FP32), got booleans" in result.stderr


def test_it_reads_a_csv_whose_extension_is_in_capitals(iris_folder, key_file, tmp_path):
    """Windows tools write `ROWS.CSV`: it is CSV, as the batch upload takes it, not JSON."""
    rows = tmp_path / "ROWS.CSV"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(rows))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["label"] == ["setosa", "virginica"]


def test_it_predicts_from_a_one_column_csv_for_a_model_of_one_number_per_row(db, api, key_file, tmp_path):
    """An input of shape [N] is one CSV column (as batch CSV reads it); run.py said 'has shape [2, 1]'."""
    from models_registry.services import model_get_or_create, model_version_register
    from tests import onnx_factories

    version = model_version_register(
        model=model_get_or_create(name="doubler"), content=onnx_factories.doubled_column(), aliases=["production"]
    )
    folder = extract(build_now(version), tmp_path / "bundle")
    (tmp_path / "rows.csv").write_text("x\n1.5\n-2\n")
    result = run(folder, "predict", "--public-key", str(key_file), "--input", str(tmp_path / "rows.csv"))
    assert result.returncode == 0, result.stderr
    online = api.post_json("/v1/models/doubler:predict", {"instances": [1.5, -2]}).json()["predictions"]
    assert json.loads(result.stdout)["outputs"]["doubled"] == online == [3.0, -4.0]


def test_it_refuses_a_csv_number_written_with_an_underscore_as_batch_csv_does(iris_folder, key_file, tmp_path):
    """float() reads `1_000` as 1000: the model ran on a number the file never showed."""
    (tmp_path / "rows.csv").write_text("5.1,3.5,1.4,0.2\n6_7,3.0,5.2,2.3\n")
    result = run(iris_folder, "predict", "--public-key", str(key_file), "--input", str(tmp_path / "rows.csv"))
    assert result.returncode == 3, result.stdout
    assert "CSV row 2 holds a value that is not a number" in result.stderr
