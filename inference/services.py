"""Online inference: resolve a servable version, check inputs, run the model."""

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from apiservice.errors import Conflict, InvalidInput
from models_registry.models import ModelVersion
from models_registry.selectors import model_get, model_version_local_path, model_version_resolve

from . import runtime
from .tensors import check_feeds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Servable:
    """What the hot path needs about a version, cached per process for at most a second."""

    version_id: int
    number: int
    model_name: str
    status: str
    signature: Mapping[str, list[dict[str, Any]]]
    path: str
    available_versions: tuple[str, ...] = ()


_resolve_cache: dict[tuple[int | None, str, str | None, str], tuple[float, Servable]] = {}
_resolve_lock = threading.Lock()
RESOLVE_TTL_SECONDS = 1.0  # alias moves and new versions are seen within a second


def servable_resolve(
    *, organisation_id: int | None, model_name: str, ref: str | None, ref_param: str = "version"
) -> Servable:
    """The servable `ref` names; `ref_param` is the path parameter it came in (`version`, or `alias`
    for `/labels/{alias}`), which a NotFound names and which is part of the cache key: `1` is a
    version number but never an alias."""
    key = (organisation_id, model_name, ref, ref_param)
    entry = _resolve_cache.get(key)
    now = time.monotonic()
    if entry is not None and entry[0] > now:
        return entry[1]
    model = model_get(name=model_name, organisation_id=organisation_id)
    version = model_version_resolve(model=model, ref=ref, param=ref_param)
    servable = servable_from_version(version)
    with _resolve_lock:
        if len(_resolve_cache) > 10_000:
            _resolve_cache.clear()
        _resolve_cache[key] = (now + RESOLVE_TTL_SECONDS, servable)
    return servable


def servable_from_version(version: ModelVersion) -> Servable:
    ready = version.is_servable
    return Servable(
        version_id=version.pk,
        number=version.number,
        model_name=version.model.name,
        status=version.status,
        signature=version.signature,
        path=str(model_version_local_path(version=version)) if ready else "",
    )


def servable_clear_cache() -> None:
    with _resolve_lock:
        _resolve_cache.clear()


def require_ready(servable: Servable, *, param: str = "version") -> None:
    """Conflict unless the version is ready; `param` as for `servable_resolve`."""
    if servable.status != ModelVersion.Status.READY:
        raise Conflict(
            f"Version {servable.number} of '{servable.model_name}' is not servable ({servable.status}).",
            code="version_not_ready",
            param=param,
        )


def feeds_check(*, servable: Servable, feeds: Mapping[str, np.ndarray], param_prefix: str) -> int:
    return check_feeds(
        feeds,
        signature=servable.signature,
        max_rows=settings.INFERENCE_MAX_ROWS,
        nan_policy=settings.INFERENCE_NAN_POLICY,
        param_prefix=param_prefix,
    )


def predict(
    *, servable: Servable, feeds: Mapping[str, np.ndarray], output_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Run checked feeds through the version's cached ONNX Runtime session."""
    loaded = runtime.loaded_model(key=servable.version_id, path=servable.path, signature=servable.signature)
    try:
        return runtime.run_loaded(loaded, feeds, output_names or loaded.output_names)
    except runtime.InputRejected as exc:
        logger.warning("model %s v%s refused inputs: %s", servable.model_name, servable.number, exc)
        raise InvalidInput(
            "The model refused these inputs when it ran: a value or shape is outside what it accepts "
            "(for example an index past the end of a lookup table, or a division by zero)."
        ) from None
