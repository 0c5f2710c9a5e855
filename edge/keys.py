"""Ed25519 keys for bundle manifests.

The signing key comes from settings: `EDGE_SIGNING_KEY` (a PKCS#8 PEM, e.g. from a secret store) or
`EDGE_SIGNING_KEY_FILE`. With neither, a development key is generated once under VAR_DIR (git-ignored),
as settings does for SECRET_KEY. Public keys of retired signing keys stay listed through
`EDGE_EXTRA_PUBLIC_KEYS`, so bundles signed before a rotation still verify.
"""

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_generate_lock = threading.Lock()


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    raw: bytes
    current: bool

    @property
    def pem(self) -> str:
        key = Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def raw_b64(self) -> str:
        return base64.b64encode(self.raw).decode()


def key_id_of(raw_public: bytes) -> str:
    """A stable id: the first 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return "ed25519:" + hashlib.sha256(raw_public).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_pem(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{source} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{source} must be an Ed25519 key.")
    return key


def _generate_dev_key(path: Path) -> None:
    with _generate_lock:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        partial = path.with_suffix(".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        partial.replace(path)


def signing_key() -> Ed25519PrivateKey:
    if settings.EDGE_SIGNING_KEY:
        return _load_pem(settings.EDGE_SIGNING_KEY.encode(), "EDGE_SIGNING_KEY")
    path = Path(settings.EDGE_SIGNING_KEY_FILE or Path(settings.VAR_DIR) / "edge-signing-key.pem")
    if not path.exists():
        if settings.EDGE_SIGNING_KEY_FILE:
            raise ImproperlyConfigured(f"EDGE_SIGNING_KEY_FILE {path} does not exist.")
        _generate_dev_key(path)
    return _load_pem(path.read_bytes(), str(path))


def current_key_id() -> str:
    return key_id_of(_raw_public(signing_key().public_key()))


def sign(data: bytes) -> tuple[bytes, str]:
    """Ed25519 signature of `data` (64 bytes) and the id of the key that made it."""
    key = signing_key()
    return key.sign(data), key_id_of(_raw_public(key.public_key()))


def public_keys() -> list[PublicKey]:
    """The current key first, then retired keys (base64 raw keys or PEMs) still accepted."""
    current = _raw_public(signing_key().public_key())
    keys = [PublicKey(key_id=key_id_of(current), raw=current, current=True)]
    for entry in settings.EDGE_EXTRA_PUBLIC_KEYS:
        raw = _parse_public(entry)
        if raw != current and all(k.raw != raw for k in keys):
            keys.append(PublicKey(key_id=key_id_of(raw), raw=raw, current=False))
    return keys


def _parse_public(entry: str) -> bytes:
    text = entry.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ImproperlyConfigured("EDGE_EXTRA_PUBLIC_KEYS entries must be Ed25519 keys.")
        return _raw_public(key)
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ImproperlyConfigured("EDGE_EXTRA_PUBLIC_KEYS entries must be 32-byte raw keys in base64.")
    return raw
