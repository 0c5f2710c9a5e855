"""Encryption at rest for the few secrets we must read back (e.g. webhook signing secrets).

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, keyed by FIELD_ENCRYPTION_KEY when set, else a
key derived from SECRET_KEY. Rotating the key means re-encrypting these fields.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


@cache
def _fernet(key_material: str) -> Fernet:
    digest = hashlib.sha256(("modelmeter.field-encryption:" + key_material).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _current() -> Fernet:
    return _fernet(settings.FIELD_ENCRYPTION_KEY or settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("This value was encrypted with another key (FIELD_ENCRYPTION_KEY / SECRET_KEY).") from None
