"""Verify bundles with an implementation independent of edge/: cryptography's raw Ed25519 + hashlib."""

import base64
import hashlib
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.conftest import APIClient

from .conftest import build_now, zip_members


def _published_key(key_id: str) -> Ed25519PublicKey:
    keys = APIClient().get("/v1/edge/keys").json()["keys"]
    entry = next(k for k in keys if k["key_id"] == key_id)
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key_b64"]))


def test_it_signs_the_exact_manifest_bytes_and_hashes_every_file(iris):
    members = zip_members(build_now(iris))
    manifest_bytes = members["manifest.json"]
    manifest = json.loads(manifest_bytes)
    _published_key(manifest["key_id"]).verify(members["manifest.sig"], manifest_bytes)  # raises if invalid
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert set(listed) == set(members) - {"manifest.json", "manifest.sig"}
    for path, entry in listed.items():
        assert entry["size"] == len(members[path])
        assert entry["sha256"] == hashlib.sha256(members[path]).hexdigest()
    # Canonical form: what was signed is the sorted, compact JSON of the manifest itself.
    assert manifest_bytes == json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_it_serves_the_public_key_with_a_stable_id(db):
    body = APIClient().get("/v1/edge/keys").json()
    current = [k for k in body["keys"] if k["current"]]
    assert len(current) == 1
    raw = base64.b64decode(current[0]["public_key_b64"])
    assert current[0]["key_id"] == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    assert current[0]["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_it_lists_retired_keys_for_rotation(db, settings):
    retired = base64.b64encode(bytes(range(32))).decode()
    settings.EDGE_EXTRA_PUBLIC_KEYS = [retired]
    keys = APIClient().get("/v1/edge/keys").json()["keys"]
    assert [k["current"] for k in keys] == [True, False]
    assert keys[1]["public_key_b64"] == retired


def test_it_detects_a_one_byte_change_in_the_manifest_independently(iris):
    members = zip_members(build_now(iris))
    manifest = json.loads(members["manifest.json"])
    tampered = bytearray(members["manifest.json"])
    tampered[10] ^= 0x01
    with pytest.raises(InvalidSignature):
        _published_key(manifest["key_id"]).verify(members["manifest.sig"], bytes(tampered))
