"""Batch files in Django storage, written through local spool files so memory never holds a file."""

import io
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile

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


def store_upload(name: str, upload: UploadedFile) -> str:
    """Save an uploaded file under `name`: on local storage a spooled upload is moved, not copied."""
    upload.seek(0)
    return default_storage.save(name, upload)


def store_joined(name: str, parts: list[str], *, header: bytes = b"") -> tuple[str, int]:
    """Save `header` and the files `parts`, one after the other, as `name`; (stored name, size).

    The parts are streamed straight into the new file: one copy, no spool file in between.
    """
    with _Joined(header, parts) as joined:
        stored = store(name, joined)  # type: ignore[arg-type]
        return stored, joined.position


class _Joined(io.RawIOBase):
    """A read-only stream of `head` then of each stored file in `names` in turn, opened one at a time."""

    def __init__(self, head: bytes, names: list[str]) -> None:
        self.head, self.names, self.position = head, iter(names), 0
        self.current: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # only to where it is already: storages "rewind" a stream they are given

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (whence, offset) not in ((io.SEEK_SET, self.position), (io.SEEK_CUR, 0)):
            raise io.UnsupportedOperation("a joined stream reads forwards only")
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else 1 << 62
        block = self._block(limit)
        if len(block) < limit and block:  # a part ended inside this read: go on into the next ones
            data = bytearray(block)
            while len(data) < limit and (block := self._block(limit - len(data))):
                data += block
            block = bytes(data)
        self.position += len(block)
        return block

    def _block(self, size: int) -> bytes:
        while True:
            if self.head:
                block, self.head = self.head[:size], self.head[size:]
                return block
            if self.current is not None:
                block = self.current.read(min(size, 1024 * 1024))
                if block:
                    return block
                self.current.close()
            name = next(self.names, None)
            if name is None:
                self.current = None
                return b""
            self.current = open_read(name)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()


def open_read(name: str) -> IO[bytes]:
    return default_storage.open(name, "rb")  # type: ignore[no-any-return]


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
