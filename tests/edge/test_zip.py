import hashlib
import io
import stat
import zipfile

import pytest

from edge import packaging
from edge.services import bundle_build, bundle_rebuild

from .conftest import build_now


def test_it_writes_only_safe_plain_members_in_sorted_order_with_fixed_times(digits):
    bundle = build_now(digits)
    with bundle.file.open("rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    for info in infos:
        assert not info.filename.startswith("/")
        assert ".." not in info.filename.split("/")
        assert stat.S_ISREG(info.external_attr >> 16)
        assert not stat.S_ISLNK(info.external_attr >> 16)
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
    assert "models/int8/model.onnx" in names
    config = archive.read("models/ort/required_operators.config").decode()
    assert "/tmp" not in config
    assert "# - models/ort/model.ort" in config


def test_it_gives_the_same_bytes_when_the_same_bundle_is_rebuilt(digits):
    # fp32 and int8: ONNX Runtime's ORT-format writer orders an internal table by a hash map, so `.ort`
    # files (and hence a manifest listing them) can differ between conversions; everything else is stable.
    bundle = build_now(digits, ["fp32", "int8"])
    first = bundle.sha256
    with bundle.file.open("rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == first
    assert bundle_rebuild(bundle=bundle)
    bundle_build(bundle_id=bundle.pk)
    bundle.refresh_from_db()
    assert bundle.status == "ready"
    assert bundle.sha256 == first


def test_it_gives_identical_zip_bytes_for_identical_members():
    members = {"b.txt": b"two", "a/one.bin": b"\x00\x01"}
    assert packaging.zip_bytes(members) == packaging.zip_bytes(dict(reversed(members.items())))


@pytest.mark.parametrize("path", ["/etc/passwd", "../up", "a/../../b", "a//b", "./a", "a\\b", ""])
def test_it_refuses_unsafe_member_paths(path):
    with pytest.raises(packaging.UnsafeMember):
        packaging.zip_bytes({path: b"x"})


def test_it_refuses_links_in_a_zip(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(packaging.UnsafeMember):
        packaging.zip_members_check(path)
