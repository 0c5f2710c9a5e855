"""Batch files in Django storage, streamed so that memory never holds a file.

On local storage (`FileSystemStorage`) files are written straight into place (a temporary name in the
target folder, renamed when complete) and joined with kernel copies; on other storages (S3) they go
through a local spool file and the storage's own `save`.
"""

import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile

SPOOL_BYTES = 8 * 1024 * 1024
COPY_BYTES = 16 * 1024 * 1024  # per kernel copy call when joining parts
READ_BYTES = 1024 * 1024  # buffer of a ranged S3 read


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


@dataclass
class Written:
    """A file being written by `writing`: write to `file`; `name` is the stored name once it is closed."""

    file: IO[bytes]
    name: str = ""


def local_path(name: str) -> str | None:
    """The file system path of `name` on local storage; None on storages without paths (S3)."""
    try:
        return str(default_storage.path(name))
    except NotImplementedError:
        return None


@contextmanager
def writing(name: str) -> Iterator[Written]:
    """Write the stored file `name` as a stream, replacing any earlier file of that name.

    Local storage: straight into a temporary file next to its final place, renamed over it when the
    block ends without an exception (so a reader never sees half a file, and nothing is copied);
    elsewhere: into a spool file, then `store`. On an exception nothing is stored.
    """
    path = local_path(name)
    if path is None:
        with spool() as handle:
            written = Written(handle)
            yield written
            written.name = store(name, handle)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            written = Written(handle)  # type: ignore[arg-type]
            yield written
        mode = default_storage.file_permissions_mode  # type: ignore[attr-defined]
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    written.name = name


def store_upload(name: str, upload: UploadedFile) -> str:
    """Save an uploaded file under `name`: on local storage a spooled upload is moved, not copied."""
    upload.seek(0)
    return default_storage.save(name, upload)


def store_joined(name: str, parts: list[str], *, header: bytes = b"") -> tuple[str, int]:
    """Save `header` and the files `parts`, one after the other, as `name`; (stored name, size).

    Local storage: the kernel copies each part into the new file (`os.copy_file_range`, else
    `os.sendfile`), so the bytes never pass through Python. Elsewhere the parts are streamed into the
    storage's `save`: one copy, no spool file in between.
    """
    if local_path(name) is None:
        with _Joined(header, parts) as joined:
            stored = store(name, joined)  # type: ignore[arg-type]
            return stored, joined.position
    with writing(name) as target:
        target.file.write(header)
        target.file.flush()  # from here on only the kernel writes to the file
        for part in parts:
            path = local_path(part)
            assert path is not None  # the parts are on the same storage
            with open(path, "rb") as source:
                _copy_file(source, target.file)
        size = os.fstat(target.file.fileno()).st_size
    return target.name, size


def _copy_file(source: IO[bytes], target: IO[bytes]) -> None:
    """Append all of `source` to `target` (unbuffered, at its position) with kernel copies."""
    remaining = os.fstat(source.fileno()).st_size
    copies = [_copy_file_range, _sendfile]
    while remaining > 0:
        try:
            copied = copies[0](source.fileno(), target.fileno(), min(remaining, COPY_BYTES))
        except OSError:  # not supported between these files: the next way, then plain reads and writes
            copies.pop(0)
            if copies:
                continue
            shutil.copyfileobj(source, target, COPY_BYTES)  # the kernel copies moved both positions
            return
        if copied == 0:
            return  # the part ended early: it cannot (parts never change), but never loop forever
        remaining -= copied


def _copy_file_range(source_fd: int, target_fd: int, count: int) -> int:
    return os.copy_file_range(source_fd, target_fd, count)


def _sendfile(source_fd: int, target_fd: int, count: int) -> int:
    return os.sendfile(target_fd, source_fd, None, count)


class _Joined(io.RawIOBase):
    """A read-only stream of `head` then of each stored file in `names` in turn, opened one at a time."""

    def __init__(self, head: bytes, names: list[str]) -> None:
        self.head, self.names, self.position = head, iter(names), 0
        self.current: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # False, so that boto3 streams it as an upload of unknown size (in parts, through memory); told
        # it could seek, it seeks to the end to learn the size, and the finalisation failed on S3.
        return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # Only to where it already is: a storage may "rewind" a stream it is given.
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
    """The stored file `name` for reading. On S3, read with ranged GETs from where it is read.

    django-storages downloads an S3 object whole before its first byte is read; a validation part or a
    chunk reads a few MiB of a file of up to FILE_MAX_BYTES, so each downloaded all of it.
    """
    handle = default_storage.open(name, "rb")
    obj = getattr(handle, "obj", None)  # S3File's boto3 Object; nothing is downloaded until it is read
    if local_path(name) is not None or obj is None:
        return handle  # type: ignore[no-any-return]
    return io.BufferedReader(_Ranged(obj, size=int(handle.size)), READ_BYTES)


class _Ranged(io.RawIOBase):
    """An S3 object read through one streamed GET per position (`Range: bytes=<position>-`)."""

    def __init__(self, obj: Any, *, size: int) -> None:
        self.obj, self.size, self.position = obj, size, 0
        self.body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset != self.position:
            self._drop()
            self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        if self.position >= self.size or len(buffer) == 0:
            return 0
        if self.body is None:
            self.body = self.obj.get(Range=f"bytes={self.position}-")["Body"]
        data = self.body.read(len(buffer))
        if not data:  # the response ended before the object did: never let a reader take it for the end
            raise OSError(f"S3 read of {self.obj.key} ended at {self.position} of {self.size} bytes")
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def _drop(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        self._drop()
        super().close()


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
