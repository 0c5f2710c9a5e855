"""Batch files in Django storage, written through local spool files so memory never holds a file."""

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage

SPOOL_BYTES = 8 * 1024 * 1024


def batch_prefix(*, organisation_id: int, batch_uid: str) -> str:
    return f"batches/{organisation_id}/{batch_uid}"


@contextmanager
def spool() -> Iterator[IO[bytes]]:
    """A temporary local file (in memory up to 8 MiB) to stream a result into before storing it."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as handle:
        yield handle  # type: ignore[misc]


def store(name: str, handle: IO[bytes]) -> str:
    """Save a spooled file under `name`, replacing any earlier file of that name; the stored name."""
    handle.seek(0)
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, DjangoFile(handle, name=name.rsplit("/", 1)[-1]))


def open_read(name: str) -> IO[bytes]:
    return default_storage.open(name, "rb")  # type: ignore[no-any-return]


def append(target: IO[bytes], names: Iterable[str]) -> None:
    for name in names:
        with open_read(name) as source:
            shutil.copyfileobj(source, target, 1024 * 1024)


def size(name: str) -> int:
    return int(default_storage.size(name))


def delete_quietly(names: Iterable[str]) -> None:
    for name in names:
        if name and default_storage.exists(name):
            default_storage.delete(name)


def delete_folder(prefix: str) -> None:
    """Remove every file under `prefix` (parts left by attempts that died)."""
    try:
        folders, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    delete_quietly(f"{prefix}/{name}" for name in files)
    for folder in folders:
        delete_folder(f"{prefix}/{folder}")
