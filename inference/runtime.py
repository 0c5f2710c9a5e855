"""The one module that imports onnxruntime: sessions, their per-process cache, and running them.

One session per (model version, process), built lazily on first use, warmed up once, and kept in an
LRU cache capped by the summed size of the model files (a proxy for their memory).
"""

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .datatypes import OIP_TO_NUMPY

ORT_VERSION = ort.__version__


@dataclass
class LoadedModel:
    session: ort.InferenceSession
    output_names: list[str]
    size_bytes: int


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


def sample_feeds(signature: Mapping[str, list[dict]], rows: int = 1) -> dict[str, np.ndarray]:
    """Generated inputs that fit a signature: dynamic dims become `rows` (first) or 1 (others)."""
    feeds: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for spec in signature["inputs"]:
        shape = [(rows if index == 0 else 1) if dim < 0 else dim for index, dim in enumerate(spec["shape"])]
        dtype = OIP_TO_NUMPY[spec["datatype"]]
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "a", dtype=object)
        elif dtype.kind == "f":
            feeds[spec["name"]] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec["name"]] = np.zeros(shape, dtype=dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def run_session(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], output_names: list[str]
) -> dict[str, np.ndarray]:
    results = session.run(output_names, dict(feeds))
    return {name: np.asarray(value) for name, value in zip(output_names, results, strict=True)}


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
        run_session(session, sample_feeds(signature), output_names)  # warm-up
        item = LoadedModel(session=session, output_names=output_names, size_bytes=Path(path).stat().st_size)
        cache.put(key, item)
        return item


def smoke_test(path: str | Path, signature: Mapping[str, list[dict]]) -> None:
    """Load a model and run it once on generated inputs (used in the validation sandbox)."""
    session = new_session(path, intra_op_threads=1)
    output_names = [o.name for o in session.get_outputs()]
    for rows in (1, 2):
        run_session(session, sample_feeds(signature, rows=rows), output_names)
