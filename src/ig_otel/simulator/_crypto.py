"""The RSA key of ``GET /session/encryptionKey`` and encrypted-password login.

IG's encrypted login: the client encrypts ``base64(password|timeStamp)`` with
the published RSA key (PKCS#1 v1.5) and sends the base64 result. The key is
generated per simulator with ``cryptography`` or, failing that, PyCryptodome;
with neither installed the endpoint still answers but encrypted logins are
refused as bad credentials.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import Any

__all__ = ["KeyPair"]

logger = logging.getLogger(__name__)


def _generate() -> tuple[Any, str] | None:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        pass
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return ("cryptography", key), base64.b64encode(der).decode()
    try:
        from Crypto.PublicKey import RSA
    except ImportError:
        return None
    key = RSA.generate(1024)
    der = key.publickey().export_key(format="DER")
    return ("pycryptodome", key), base64.b64encode(der).decode()


def _decrypt(backend: tuple[str, Any], data: bytes) -> bytes | None:
    kind, key = backend
    if kind == "cryptography":
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            return key.decrypt(data, padding.PKCS1v15())
        except ValueError:
            return None
    from Crypto.Cipher import PKCS1_v1_5

    sentinel = b""
    plain = PKCS1_v1_5.new(key).decrypt(data, sentinel)
    return plain or None


class KeyPair:
    """A lazily generated RSA key pair and the timestamp IG pairs with it."""

    def __init__(self) -> None:
        self.timestamp = int(time.time() * 1000)
        self._backend: tuple[str, Any] | None = None
        self._public = ""
        self._tried = False

    def _ensure(self) -> None:
        if self._tried:
            return
        self._tried = True
        generated = _generate()
        if generated is None:
            logger.warning(
                "neither cryptography nor pycryptodome is installed: encrypted "
                "logins will be refused")
            self._public = base64.b64encode(b"no-rsa-backend").decode()
            return
        self._backend, self._public = generated

    def public_key_b64(self) -> str:
        """The base64 DER public key (``encryptionKey``)."""
        self._ensure()
        return self._public

    def decrypt_password(self, encrypted: object) -> str | None:
        """The clear password from an encrypted one, or None if undecodable."""
        self._ensure()
        if self._backend is None or not isinstance(encrypted, str):
            return None
        try:
            plain = _decrypt(self._backend, base64.b64decode(encrypted))
            if plain is None:
                return None
            text = base64.b64decode(plain).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        password, _, stamp = text.rpartition("|")
        return password if stamp == str(self.timestamp) else None
