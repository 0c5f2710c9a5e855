#!/usr/bin/env python3
"""ModelMeter edge bundle runner: verify, check against golden outputs, predict. Offline.

Needs only the standard library, onnxruntime (with its numpy) and cryptography.

    python run.py verify  --public-key modelmeter.pem
    python run.py golden  --public-key modelmeter.pem [--variant int8]
    python run.py predict --public-key modelmeter.pem --input rows.csv [--variant fp32] [--allow-nan]

`--bundle` is the bundle's zip or its extracted folder (default: the folder holding this file).
`--public-key` is a PEM file, or the base64 raw key from `GET /v1/edge/keys`. Every command verifies
the manifest's Ed25519 signature, every file's size and SHA-256, and that the bundle holds no other
file (bar the --input and --public-key files you name), before anything runs.
Exit status: 0 ok, 1 golden outputs out of tolerance, 2 verification failed, 3 bad usage or input.
"""

# First, before any other import: Python puts this script's folder at the head of sys.path, so a file
# dropped beside run.py (onnxruntime.py, numpy.py, even json.py) would be imported instead of the real
# module. `os` and `sys` are loaded (or frozen) before this line runs, so they cannot be shadowed.
import os
import sys


def _canonical(path):
    return os.path.normcase(os.path.realpath(path or os.curdir))


_HERE = _canonical(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [entry for entry in sys.path if _canonical(entry) != _HERE]

import argparse  # noqa: E402
import base64  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

SIGNED = ("manifest.json", "manifest.sig")


class VerificationError(Exception):
    pass


class UsageError(Exception):
    pass


def load_public_key(value):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(value)
    if not path.is_file() and value.lower().endswith(".pem"):  # a file name, not a base64 key
        raise UsageError(f"no public key file {value}")
    text = path.read_bytes() if path.is_file() else value.encode()
    if text.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError("the public key is not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise UsageError(f"cannot read the public key: {exc}") from None


def key_id_of(public_key):
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


class Bundle:
    """The bundle's files, read from the zip or the extracted folder, verified before use."""

    def __init__(self, location):
        self.location = Path(location)
        if not self.location.exists():
            raise UsageError(f"no bundle at {location}: name the zip, or the folder it was extracted into")
        self._zip = zipfile.ZipFile(self.location) if self.location.is_file() else None
        self.manifest = {}  # set by verify()

    def read(self, path):
        if ".." in path.split("/") or path.startswith("/"):
            raise VerificationError(f"unsafe path in manifest: {path!r}")
        try:
            if self._zip is not None:
                return self._zip.read(path)
            return (self.location / path).read_bytes()
        except (KeyError, FileNotFoundError):
            raise VerificationError(f"missing file: {path}") from None
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise VerificationError(f"corrupt member {path}: {exc}") from None

    def members(self):
        """Every entry of the bundle: the zip's member names, or the folder's files and links."""
        if self._zip is not None:
            return set(self._zip.namelist())
        found = set()
        for folder, dirs, files in os.walk(self.location):  # does not follow linked folders...
            links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # ...which are entries too
            for name in files + links:
                found.add(Path(folder, name).relative_to(self.location).as_posix())
        return found

    def repeated(self):
        """Names the zip stores more than once: zipfile reads the last copy, other readers the first."""
        seen: set[str] = set()
        repeated: set[str] = set()
        for name in self._zip.namelist() if self._zip is not None else []:
            (repeated if name in seen else seen).add(name)
        return sorted(repeated)

    def stray_bytes(self):
        """The offset of the first bytes of the zip that are no entry's (before, between or after its
        entries, up to the directory), or None. A reader that streams a zip's entries instead of reading
        its directory (as zipfile and unzip do) would find a file there that was never verified."""
        if self._zip is None:
            return None
        expected = 0
        with open(self.location, "rb") as handle:
            for info in sorted(self._zip.infolist(), key=lambda i: i.header_offset):
                handle.seek(info.header_offset)
                header = handle.read(30)
                # A bundle's entries lie back to back from byte 0, without data descriptors.
                if info.header_offset != expected or header[:4] != b"PK\x03\x04" or info.flag_bits & 0x08:
                    return expected
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                expected = info.header_offset + 30 + name_length + extra_length + info.compress_size
        return None if expected == getattr(self._zip, "start_dir", expected) else expected

    def _outside(self, paths):
        """Of the files named on the command line, those inside this folder, relative to it."""
        if self._zip is not None:
            return set()
        root = self.location.resolve()
        inside = set()
        for path in paths:
            resolved = Path(path).resolve()
            if resolved.is_file() and root in resolved.parents:
                inside.add(resolved.relative_to(root).as_posix())
        return inside

    def verify(self, public_key, yours=()):
        """Check the signature, every listed file, and that nothing else is in the bundle.

        `yours`: files named on the command line (the input, the public key). They are the caller's
        data, read and never executed, so they may sit in the bundle's folder."""
        from cryptography.exceptions import InvalidSignature

        repeated = self.repeated()
        if repeated:
            raise VerificationError(
                f"files stored more than once in the zip: {repeated} (which copy runs depends on the reader)"
            )
        stray = self.stray_bytes()
        if stray is not None:
            raise VerificationError(
                f"the zip holds bytes outside its files, from byte {stray} (a reader that streams the zip "
                "would find unverified files there)"
            )
        manifest_bytes, signature = self.read("manifest.json"), self.read("manifest.sig")
        try:
            public_key.verify(signature, manifest_bytes)
        except InvalidSignature:
            raise VerificationError("manifest signature is NOT valid for this public key") from None
        manifest = json.loads(manifest_bytes)
        if manifest.get("key_id") != key_id_of(public_key):
            raise VerificationError(f"manifest names key {manifest.get('key_id')}, not {key_id_of(public_key)}")
        listed = {entry["path"] for entry in manifest["files"]}
        for entry in manifest["files"]:
            data = self.read(entry["path"])
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise VerificationError(f"file changed: {entry['path']}")
        extra = self.members() - listed - set(SIGNED) - self._outside(yours)
        if extra:
            raise VerificationError(
                f"files not in the manifest: {sorted(extra)} (a bundle holds only its signed files: "
                "extract the zip again into an empty folder)"
            )
        self.manifest = manifest
        return manifest

    def variant_file(self, variant):
        info = self.manifest["variants"].get(variant)
        if info is None or info["status"] != "published":
            reason = info["reason"] if info else "unknown variant"
            raise UsageError(f"variant {variant!r} is not in this bundle ({reason})")
        return next(p for p in info["files"] if p.endswith((".onnx", ".ort")))


class Runner:
    """An ONNX Runtime session on one verified variant."""

    def __init__(self, bundle, variant=None):
        import onnxruntime as ort

        self.manifest = bundle.manifest
        self.variant = variant or self.manifest["default_variant"]
        path = bundle.variant_file(self.variant)
        options = ort.SessionOptions()
        if path.endswith(".ort"):
            options.add_session_config_entry("session.load_model_format", "ORT")
        minimum = self.manifest["onnxruntime"]["minimum_version"]
        if _version(ort.__version__) < _version(minimum):
            print(f"warning: onnxruntime {ort.__version__} is older than {minimum}", file=sys.stderr)
        self.session = ort.InferenceSession(bundle.read(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        import numpy as np

        values = self.session.run(self.output_names, feeds)
        return {name: np.asarray(value) for name, value in zip(self.output_names, values)}  # noqa: B905 (runs on Python < 3.10 too)


def _version(text):
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


def tensors(items):
    import numpy as np

    return {t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"]) for t in items}


def compare(expected, actual, tolerance):
    """The server's parity rule (see the manifest's `golden.tolerances`)."""
    import numpy as np

    failures, outputs = [], {}
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or got.shape != want.shape:
            failures.append(f"output '{name}' is missing or has another shape")
            continue
        if want.dtype.kind == "f":
            scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-6)
            error = float(np.max(np.abs(got.astype("float64") - want.astype("float64")))) / scale if want.size else 0.0
            outputs[name] = {"max_relative_error": error}
            limit = tolerance["max_relative_error"]
            if limit is not None and not error <= limit:
                failures.append(f"output '{name}': relative error {error:.3g} > {limit:g}")
        else:
            agreement = float(np.mean(got == want)) if want.size else 1.0
            outputs[name] = {"label_agreement": agreement}
            if agreement < tolerance["min_label_agreement"]:
                failures.append(
                    f"output '{name}': label agreement {agreement:.4f} < {tolerance['min_label_agreement']:g}"
                )
    return {"passed": not failures, "outputs": outputs, "failures": failures}


def read_input(path, signature, allow_nan=False):
    """JSON (`{"instances": rows}`, `{"inputs": {name: tensor}}` or a bare list of rows) or CSV rows,
    checked against the model's inputs (see `check_input`) so a bad input is a usage error (3)."""
    specs = signature["inputs"]
    text = _read_text(path)
    is_csv = str(path).lower().endswith(".csv")  # ROWS.CSV too, as the batch upload reads it
    if is_csv:
        body = {"instances": _csv_rows(text)}
    else:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"the input is not valid JSON: {exc}") from None
        body = {"instances": body} if isinstance(body, list) else body
    if not isinstance(body, dict):
        raise UsageError('send rows (a list), {"instances": rows} or {"inputs": {name: tensor}}')
    if isinstance(body.get("inputs"), dict):
        given = body["inputs"]
        unknown = sorted(set(given) - {s["name"] for s in specs})
        missing = [s["name"] for s in specs if s["name"] not in given]
        if unknown or missing:
            raise UsageError(
                f"unknown input(s) {unknown}, missing input(s) {missing}; "
                f"this model's inputs are: {', '.join(s['name'] for s in specs)}"
            )
    elif len(specs) != 1:
        raise UsageError('this model has several inputs: send {"inputs": {name: tensor}}')
    elif "instances" not in body:
        raise UsageError('send rows (a list), {"instances": rows} or {"inputs": {name: tensor}}')
    else:
        given = {specs[0]["name"]: body["instances"]}
        if is_csv and len(specs[0]["shape"]) == 1 and all(len(row) == 1 for row in body["instances"]):
            given = {specs[0]["name"]: [row[0] for row in body["instances"]]}  # [N]: one column, as batch CSV
    feeds = {s["name"]: check_input(given[s["name"]], s, allow_nan=allow_nan) for s in specs}
    _check_rows(feeds, specs)
    return feeds


def _read_text(path):
    """The input as text: UTF-8 whatever the device's locale, without the byte order mark that Excel's
    "CSV UTF-8" and some JSON writers put first (it made the first CSV row read as a header)."""
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the input is not UTF-8 (byte {exc.start})") from None


def _csv_rows(text):
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header line
    if not rows:
        raise UsageError(
            "the CSV holds no rows of numbers (a first line that is not numbers is read as a header; "
            "separate values with commas)"
        )
    for number, row in enumerate(rows, start=1):
        if not _numeric(row):
            raise UsageError(f"CSV row {number} holds a value that is not a number: {row}")
    return [[float(v) for v in row] for row in rows]


def check_input(value, spec, allow_nan=False):
    """One input as an array of the model's datatype, refused (UsageError) as the online API refuses it:
    ragged rows, strings or decimals where numbers or integers go, values out of range, the wrong rank
    or a wrong fixed dimension, and NaN or infinity (unless `allow_nan`)."""
    import numpy as np

    name, datatype = spec["name"], spec["datatype"]
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raw = np.asarray(None)
    if raw.dtype.kind == "O":
        raise UsageError(
            f"input '{name}' is ragged (rows of different lengths), mixes value types or holds numbers out of range"
        )
    if datatype == "BYTES":
        if raw.dtype.kind != "U":
            raise UsageError(f"input '{name}' expects strings (BYTES)")
        array = raw.astype(object)
    elif datatype == "BOOL":
        if raw.dtype.kind != "b":
            raise UsageError(f"input '{name}' expects booleans (BOOL)")
        array = raw
    else:
        array = _numbers(raw, name, datatype, allow_nan, value)
    expected = spec["shape"]
    wanted = "[" + ", ".join("N" if d < 0 else str(d) for d in expected) + "]"
    if array.ndim != len(expected) or any(w >= 0 and g != w for g, w in zip(array.shape, expected)):  # noqa: B905
        raise UsageError(f"input '{name}' has shape {list(array.shape)}; the model expects {wanted}")
    if array.ndim and array.shape[0] == 0:
        raise UsageError(f"input '{name}' is empty")
    return array


def _numbers(raw, name, datatype, allow_nan, value):
    import numpy as np

    if raw.dtype.kind not in "iuf":
        raise UsageError(f"input '{name}' expects numbers ({datatype})")
    if _holds_bool(value):  # numpy reads a JSON true among numbers as 1: the online API refuses it
        raise UsageError(f"input '{name}' expects numbers ({datatype}), got booleans")
    target = np.dtype(DTYPES[datatype])
    if target.kind in "iu":
        if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and (raw == np.floor(raw)).all()):
            raise UsageError(f"input '{name}' expects integers ({datatype}), got decimals, NaN or infinity")
        limits = np.iinfo(target)
        if raw.size and (raw.min() < limits.min or raw.max() > limits.max):
            raise UsageError(f"input '{name}' has values out of range for {datatype}")
        return raw.astype(target)
    with np.errstate(over="ignore"):  # too large for the type: infinity, judged below
        array = raw.astype(target)
    if not allow_nan and not np.isfinite(array).all():
        raise UsageError(
            f"input '{name}' contains NaN or infinity (or a number too large for {datatype}); the online API "
            "refuses these too. Pass --allow-nan to run the model on them anyway."
        )
    return array


def _holds_bool(value):
    """Whether a JSON value (nested lists) holds a boolean anywhere."""
    if isinstance(value, bool):
        return True
    return isinstance(value, list) and any(_holds_bool(item) for item in value)


def _check_rows(feeds, specs):
    rows = {s["name"]: feeds[s["name"]].shape[0] for s in specs if s["shape"] and s["shape"][0] < 0}
    if len(set(rows.values())) > 1:
        raise UsageError(f"every input needs the same number of rows; got {rows}")


def _numeric(row):
    """Numbers as a CSV writes them: float() alone also reads `1_000` and other scripts' digits."""
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return all("_" not in v and v.isascii() for v in row)


def _jsonable(array):
    """An output as JSON values in its own shape (strings decoded), as the online API answers."""
    if array.dtype != object:
        return array.tolist()
    import numpy as np

    decoded = np.frompyfunc(lambda v: v.decode() if isinstance(v, bytes) else v, 1, 1)(array)
    return np.asarray(decoded, dtype=object).tolist()


def cmd_verify(bundle, args):
    manifest = bundle.manifest
    published = [n for n, v in manifest["variants"].items() if v["status"] == "published"]
    print(
        f"OK: {manifest['model']['name']} v{manifest['model']['version']} signed by {manifest['key_id']}; "
        f"{len(manifest['files'])} files verified; variants: {', '.join(published)}"
    )
    return 0


def cmd_golden(bundle, args):
    manifest = bundle.manifest
    golden = manifest["golden"]
    inputs = tensors(json.loads(bundle.read(golden["inputs"]))["inputs"])
    expected = tensors(json.loads(bundle.read(golden["outputs"]))["outputs"])
    names = [n for n, v in manifest["variants"].items() if v["status"] == "published"]
    if args.variant:
        names = [args.variant]
    report = {}
    for name in names:
        runner = Runner(bundle, name)
        report[name] = compare(expected, runner.run(inputs), golden["tolerances"][name])
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if all(r["passed"] for r in report.values()) else 1


def cmd_predict(bundle, args):
    feeds = read_input(args.input, bundle.manifest["signature"], allow_nan=args.allow_nan)
    runner = Runner(bundle, args.variant)
    try:
        outputs = runner.run(feeds)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        raise UsageError(f"ONNX Runtime refused this input: {exc}") from None
    print(json.dumps({"variant": runner.variant, "outputs": {n: _jsonable(v) for n, v in outputs.items()}}))
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a mistyped command line; here 2 means "verification failed", so exit 3."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = ArgumentParser(description="Verify and run a ModelMeter edge bundle offline.")
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent), help="zip or extracted folder")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("verify", "golden", "predict"):
        command = sub.add_parser(name)
        command.add_argument("--public-key", required=True, help="PEM file or base64 raw Ed25519 key")
        if name != "verify":
            command.add_argument("--variant", choices=["fp32", "int8", "ort"])
        if name == "predict":
            command.add_argument("--input", required=True, help="a .json or .csv file, or - for JSON on stdin")
            command.add_argument(
                "--allow-nan", action="store_true", help="run on NaN or infinite floats (refused by default)"
            )
    args = parser.parse_args(argv)
    try:
        bundle = Bundle(args.bundle)
        named = [args.public_key, getattr(args, "input", None)]
        bundle.verify(load_public_key(args.public_key), yours=[path for path in named if path and path != "-"])
        return {"verify": cmd_verify, "golden": cmd_golden, "predict": cmd_predict}[args.command](bundle, args)
    except VerificationError as exc:
        print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        return 2
    except (UsageError, ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
