"""Signed backups: an Ed25519 signature over the whole encrypted file, in a trailer.

Encryption to a public recipient proves nothing about who wrote a file: anyone holding the
recipient can make a backup that decrypts. So every backup ends with a trailer signed by a
key that stays with the other secrets (never with the backups), and ``verify`` and
``restore`` check it over every byte before decrypting one.

Trailer: ``MAGIC``, the signer's key id (8 bytes of SHA-256 of its public key) and the
signature of ``CONTEXT + key id + body length + SHA-512(body)``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.backup.common import CHUNK, BackupError

MAGIC = b"TEMPO-BACKUP-SIGNATURE-1"
CONTEXT = b"tempo-backup signature v1\0"
KEY_ID_SIZE = 8
SIGNATURE_SIZE = 64
TRAILER_SIZE = len(MAGIC) + KEY_ID_SIZE + SIGNATURE_SIZE


@dataclass(frozen=True, slots=True)
class SignedBody:
    """What a checked signature vouches for: the first ``length`` bytes, with this digest."""

    length: int
    sha512: bytes


def key_id(public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_SIZE]


def _message(signer: bytes, length: int, sha512: bytes) -> bytes:
    return CONTEXT + signer + struct.pack(">Q", length) + sha512


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh signing key and its verify key, both PEM."""
    private = Ed25519PrivateKey.generate()
    return (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            verify_key_pem(private))


def verify_key_pem(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_key(path), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise BackupError(f"{path} is not an Ed25519 private key (PEM, unencrypted)")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read_key(path))
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise BackupError(f"{path} is not an Ed25519 public key (PEM)")
    return key


class SigningWriter:
    """Passes writes through to ``out`` and hashes them; ``finish`` appends the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._digest = hashlib.sha512()
        self._length = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self._length += len(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()

    def finish(self, key: Ed25519PrivateKey) -> None:
        signer = key_id(key.public_key())
        signature = key.sign(_message(signer, self._length, self._digest.digest()))
        self._out.write(MAGIC + signer + signature)


def check_signature(path: Path, verify_key: Ed25519PublicKey) -> SignedBody:
    """Read the whole file and check its trailer; nothing is decrypted."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        size = handle.seek(0, 2)
        if size >= TRAILER_SIZE:
            handle.seek(size - TRAILER_SIZE)
            trailer = handle.read(TRAILER_SIZE)
        else:
            trailer = b""
        if not trailer.startswith(MAGIC):
            raise BackupError("the backup is not signed (or not a Tempo backup); refusing it")
        signer = trailer[len(MAGIC):len(MAGIC) + KEY_ID_SIZE]
        if signer != key_id(verify_key):
            raise BackupError("the backup is signed by another key than the verify key "
                              "given; refusing it")
        length = size - TRAILER_SIZE
        digest = hashlib.sha512()
        handle.seek(0)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                raise BackupError("the backup file shrank while it was being checked")
            digest.update(chunk)
            left -= len(chunk)
    try:
        verify_key.verify(trailer[-SIGNATURE_SIZE:], _message(signer, length, digest.digest()))
    except InvalidSignature:
        raise BackupError("the backup's signature does not match: the file was truncated or "
                          "altered; refusing it") from None
    return SignedBody(length, digest.digest())
