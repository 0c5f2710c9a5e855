"""Batch storage: files written into place, parts joined into one file in a single pass."""

import errno
import os

import pytest

from batches import storage


def _stored(name: str, data: bytes) -> str:
    with storage.spool() as handle:
        handle.write(data)
        return storage.store(name, handle)


def test_it_joins_a_header_and_parts_in_order(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    parts = [_stored(f"t/p{i}", data) for i, data in enumerate([b"a\n", b"", b"b\n" * 500_000, b"c"])]
    name, size = storage.store_joined("t/out", parts, header=b"h\n")
    with storage.open_read(name) as handle:
        data = handle.read()
    assert data == b"h\na\n" + b"b\n" * 500_000 + b"c"
    assert size == len(data)


def test_it_joins_nothing_into_an_empty_file(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    name, size = storage.store_joined("t/empty", [])
    assert size == 0
    assert storage.size(name) == 0


def test_it_writes_a_file_into_place_replacing_an_earlier_one(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    for data in (b"first", b"second"):
        with storage.writing("t/w/file") as target:
            target.file.write(data)
    assert target.name == "t/w/file"
    with storage.open_read(target.name) as handle:
        assert handle.read() == b"second"
    assert sorted(path.name for path in (tmp_path / "t" / "w").iterdir()) == ["file"]


def test_it_stores_nothing_when_writing_fails(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    def crash() -> None:
        with storage.writing("t/w/broken") as target:
            target.file.write(b"half")
            raise RuntimeError("the chunk crashed")

    with pytest.raises(RuntimeError):
        crash()
    assert list((tmp_path / "t" / "w").iterdir()) == []


@pytest.mark.parametrize("unsupported", [[], ["copy_file_range"], ["copy_file_range", "sendfile"]])
def test_it_joins_parts_when_the_kernel_cannot_copy_between_the_files(settings, tmp_path, monkeypatch, unsupported):
    settings.MEDIA_ROOT = str(tmp_path)

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "not here")

    for name in unsupported:
        monkeypatch.setattr(os, name, refuse)
    parts = [_stored(f"t/p{i}", data) for i, data in enumerate([b"a\n" * 3000, b"b\n", b"", b"c\n" * 70_000])]
    name, size = storage.store_joined("t/out", parts, header=b"h\n")
    with storage.open_read(name) as handle:
        assert handle.read() == b"h\n" + b"a\n" * 3000 + b"b\n" + b"c\n" * 70_000
    assert size == 2 + 6000 + 2 + 140_000
