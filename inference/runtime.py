"""The one module that imports onnxruntime: sessions, their per-process cache, and running them.

One session per (model version, process), built lazily on first use, warmed up once, and kept in an
LRU cache capped by the summed size of the model files (a proxy for their memory). Each session runs
at most `ORT_CONCURRENT_RUNS` calls at once; further calls wait their turn (Triton's model instances):
runs beyond the cores the process may use would only time-share them, each holding its own buffers.
"""

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from .datatypes import OIP_TO_NUMPY

ORT_VERSION = ort.__version__


@dataclass
class LoadedModel:
    session: ort.InferenceSession
    output_names: list[str]
    size_bytes: int
    turns: "threading.Lock | threading.BoundedSemaphore"  # the runs of this session allowed at once here


def concurrent_runs(*, setting: int, intra_op_threads: int) -> int:
    """Runs of one session at once: the setting, or (0) as many as the CPUs this process may run on
    hold runs of `intra_op_threads` threads each, at least one."""
    if setting > 0:
        return setting
    return max(1, len(os.sched_getaffinity(0)) // max(1, intra_op_threads))


def new_session(
    path: str | Path, *, intra_op_threads: int = 1, optimized_path: str | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# Sizes tried, in order, for the dynamic dimensions past the first of a generated input: 1, then, for a
# model that needs wider (a convolution's kernel on a dynamic-size image), 32.
SAMPLE_SIZES = (1, 32)


def sample_feeds(
    signature: Mapping[str, list[dict]], rows: int = 1, size: int = 1, ones: bool = False
) -> dict[str, np.ndarray]:
    """Generated inputs that fit a signature: dynamic dims become `rows` (first) or `size` (others). Values
    are random floats, 0/1 integers, False and "a"; with `ones`, every value is 1 (True, "1")."""
    feeds: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for spec in signature["inputs"]:
        shape = [(rows if index == 0 else size) if dim < 0 else dim for index, dim in enumerate(spec["shape"])]
        dtype = OIP_TO_NUMPY[spec["datatype"]]
        if ones:
            feeds[spec["name"]] = np.full(shape, "1", dtype=object) if dtype.kind == "O" else np.ones(shape, dtype)
        elif spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "a", dtype=object)
        elif dtype.kind == "f":
            feeds[spec["name"]] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec["name"]] = np.zeros(shape, dtype=dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


class InputRejected(Exception):
    """ONNX Runtime refused checked inputs while running (INVALID_ARGUMENT, FAIL or RUNTIME_EXCEPTION): a
    value the signature cannot describe, such as an index past the end of an embedding table, an integer
    division by zero, text that is not a number for a model that parses one, or a batch size the graph
    cannot broadcast. The model ran on the validation samples, so its failure depends on these inputs."""


def run_session(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], output_names: list[str]
) -> dict[str, np.ndarray]:
    try:
        results = session.run(output_names, dict(feeds))
    except (InvalidArgument, Fail, RuntimeException) as exc:
        raise InputRejected(str(exc)) from exc
    return {name: np.asarray(value) for name, value in zip(output_names, results, strict=True)}


def run_loaded(loaded: LoadedModel, feeds: Mapping[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
    """`run_session` on a cached session, once one of its turns is free."""
    with loaded.turns:
        return run_session(loaded.session, feeds, output_names)


class SessionCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: int) -> LoadedModel | None:
        item = self._items.get(key)
        if item is not None:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
        return item

    def put(self, key: int, item: LoadedModel) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(i.size_bytes for i in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_cache: SessionCache | None = None
_build_lock = threading.Lock()


def session_cache() -> SessionCache:
    global _cache
    if _cache is None:
        from django.conf import settings

        _cache = SessionCache(settings.ORT_SESSION_CACHE_BYTES)
    return _cache


def loaded_model(*, key: int, path: str | Path, signature: Mapping[str, list[dict]]) -> LoadedModel:
    """The cached session for a model version, built and warmed up on first use in this process."""
    cache = session_cache()
    item = cache.get(key)
    if item is not None:
        return item
    with _build_lock:
        item = cache.get(key)
        if item is not None:
            return item
        from django.conf import settings

        session = new_session(path, intra_op_threads=settings.ORT_INTRA_OP_THREADS)
        output_names = [o.name for o in session.get_outputs()]
        run_sample(session, signature, output_names, rows=1)  # warm-up
        runs = concurrent_runs(setting=settings.ORT_CONCURRENT_RUNS, intra_op_threads=settings.ORT_INTRA_OP_THREADS)
        item = LoadedModel(
            session=session,
            output_names=output_names,
            size_bytes=Path(path).stat().st_size,
            turns=threading.Lock() if runs == 1 else threading.BoundedSemaphore(runs),  # a Lock is C, 10x cheaper
        )
        cache.put(key, item)
        return item


def run_sample(
    session: ort.InferenceSession, signature: Mapping[str, list[dict]], output_names: list[str], *, rows: int
) -> None:
    """Run generated inputs of `rows` rows until one runs: dynamic dimensions past the first 1, then each of
    the wider SAMPLE_SIZES; at each width the usual values, then all ones (a model that divides by an integer
    input, or parses numbers sent as text, refuses 0 or "a"). Raises the first refusal if none runs."""
    widths = SAMPLE_SIZES if any(dim < 0 for spec in signature["inputs"] for dim in spec["shape"][1:]) else (1,)
    first: Exception | None = None
    for size in widths:
        for ones in (False, True):
            try:
                run_session(session, sample_feeds(signature, rows=rows, size=size, ones=ones), output_names)
                return
            except Exception as exc:  # any refusal of ONNX Runtime's: try the next sample
                first = first or exc
    assert first is not None
    raise first


class SmokeTestFailed(Exception):
    """The model did not load or run on a generated input; the message says so in ONNX Runtime's words."""


def error_text(exc: BaseException) -> str:
    """ONNX Runtime's message for people: one line, without the `[ONNXRuntimeError] : 1 : FAIL :` prefix
    or the C++ source location and failed condition that come before its own explanation."""
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    text = re.sub(r"\S+\.(?:h|cc|cpp):\d+ (?:[^\n]*? was false\. )?", "", text)
    return " ".join(text.split())


def smoke_test(path: str | Path, signature: Mapping[str, list[dict]]) -> None:
    """Load a model and run it on generated inputs of 1 and 2 rows (used in the validation sandbox)."""
    try:
        session = new_session(path, intra_op_threads=1)
    except Exception as exc:
        raise SmokeTestFailed(f"ONNX Runtime could not run the model (loading it): {error_text(exc)}") from exc
    output_names = [o.name for o in session.get_outputs()]
    for rows in (1, 2):
        try:
            run_sample(session, signature, output_names, rows=rows)
        except Exception as exc:
            where = f"on a sample input ({rows} row{'s' if rows > 1 else ''})"
            raise SmokeTestFailed(f"ONNX Runtime could not run the model {where}: {error_text(exc)}") from exc


# --- Edge bundles: offline tools --------------------------------------------------------------------
# `edge/` builds bundle variants through these functions so that onnxruntime stays behind this seam.

_OFFLINE_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    # "extended" is the highest level whose output is portable across CPUs: "all" adds layout
    # transformations (NCHWc) tied to the building machine's instruction set.
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def optimize_offline(src: str | Path, dst: str | Path, *, level: str = "extended") -> None:
    """Apply ONNX Runtime's graph optimisations to `src` and save the result as `dst` (ONNX)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _OFFLINE_LEVELS[level]
    options.optimized_model_filepath = str(dst)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=options, providers=["CPUExecutionProvider"])


def quantize_dynamic_int8(src: str | Path, dst: str | Path) -> None:
    """Dynamic (weight-only int8, activations at run time) quantisation of `src` into `dst`.

    Pre-processing (shape inference + basic optimisation) runs first, without symbolic shape
    inference (that needs sympy, which only transformer-style models benefit from).
    """
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns on the root logger about pre-processing
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(prepared, str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(previous)


QUANTIZED_OP_TYPES = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "DynamicQuantizeLSTM",
        "QAttention",
        "DynamicQuantizeMatMul",
        "QEmbedLayerNormalization",
        "QGather",
    }
)


def dynamic_quantization_op_types() -> frozenset[str]:
    """The op types dynamic quantisation rewrites (so a model without any has no int8 variant)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return frozenset(IntegerOpsRegistry)


def convert_to_ort_format(src: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Convert `src` to ORT format (fixed optimisations, for ORT mobile/minimal builds).

    Returns the `.ort` file and its `required_operators.config` (the op list for a reduced build).
    """
    import contextlib
    import io
    import logging
    import shutil
    import tempfile

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # one INFO line per conversion
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "in"
        staged.mkdir()
        shutil.copyfile(src, staged / "model.onnx")
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(staged, output_dir=out, optimization_styles=[OptimizationStyle.Fixed])
    return out / "model.ort", out / "required_operators.config"


def run_model_file(path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Load any model file (.onnx or .ort) in a fresh single-threaded session and run every output."""
    session = new_session(path, intra_op_threads=1)
    return run_session(session, feeds, [o.name for o in session.get_outputs()])
