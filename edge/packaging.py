"""The bundle's bytes: canonical manifest JSON and a deterministic, hygienic zip.

Determinism: members are sorted by path, every timestamp is 1980-01-01 00:00:00, permissions are
0644, the creator system is fixed and the compression level is fixed, so equal inputs give equal
bytes (Ed25519 signatures are deterministic too). Hygiene: only relative POSIX paths of plain files,
no `..`, no absolute paths, no links, no duplicates.
"""

import hashlib
import json
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class UnsafeMember(ValueError):
    pass


def canonical_json(value: Any) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, UTF-8, no trailing newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member_check(path: str) -> None:
    """Refuse anything that could escape an extraction folder or is not a plain relative file."""
    parts = path.split("/")
    if not _SAFE_PATH.match(path) or any(part in ("", ".", "..") for part in parts):
        raise UnsafeMember(f"unsafe member path {path!r}")


def zip_bytes(members: Mapping[str, bytes]) -> bytes:
    """A deterministic zip of `{relative path: content}`."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(members):
            member_check(path)
            info = zipfile.ZipInfo(path, date_time=FIXED_DATE_TIME)
            info.create_system = 3  # Unix, whatever builds it
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, members[path], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buffer.getvalue()


def zip_members_check(path: Path) -> list[str]:
    """Names of a zip's members, after checking each is a safe, plain, unique file."""
    names: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            member_check(info.filename)
            mode = info.external_attr >> 16
            if mode and not stat.S_ISREG(mode):
                raise UnsafeMember(f"{info.filename!r} is not a plain file")
            names.append(info.filename)
    if len(set(names)) != len(names):
        raise UnsafeMember("duplicate members")
    return names
