"""Batch storage: parts joined into one file in a single pass."""

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
