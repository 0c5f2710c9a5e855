"""A validated chunk's parsed lines, stored as tensors so that running it needs no second parse."""

from typing import Any

import numpy as np
import orjson

from . import storage


def tensors_store(name: str, feeds: dict[str, list[np.ndarray]], meta: dict[str, Any]) -> str:
    """Store a parsed chunk as tensors, so running it needs no second parse of the text.

    The file is a sequence of .npy arrays (`tensors_load` reads it back): the metadata as JSON bytes
    (with the feeds' names), then each feed. No zip container: no CRC over the data, written once,
    straight into storage.

    A chunk whose feeds do not stack (different trailing shapes, strings) is not stored (""): it
    re-parses its lines when it runs.
    """
    try:
        arrays = {input_name: np.concatenate(parts) for input_name, parts in feeds.items()}
    except ValueError:
        return ""
    if any(array_.dtype == object for array_ in arrays.values()):
        return ""
    with storage.writing(name) as target:
        np.save(target.file, np.frombuffer(orjson.dumps({**meta, "feeds": list(arrays)}), dtype=np.uint8))
        for array_ in arrays.values():
            np.save(target.file, array_, allow_pickle=False)
    return target.name


def tensors_load(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, feeds) of a chunk stored by `tensors_store` (or as an .npz by earlier releases)."""
    with storage.open_read(name) as handle:
        first = np.load(handle, allow_pickle=False)
        if isinstance(first, np.lib.npyio.NpzFile):
            with first:
                meta = orjson.loads(first["meta"].tobytes())
                return meta, {key.removeprefix("feed:"): first[key] for key in first.files if key.startswith("feed:")}
        meta = orjson.loads(first.tobytes())
        return meta, {input_name: np.load(handle, allow_pickle=False) for input_name in meta["feeds"]}
