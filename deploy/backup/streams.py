"""age encryption as a stream: to recipients, or to a fresh key wrapped by a passphrase."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.backup.common import CHUNK, BackupError
from deploy.backup.signing import SignedBody, SigningWriter, check_signature

PASSPHRASE_MAGIC = b"TEMPO-BACKUP-PASSPHRASE-1\n"


@dataclass(frozen=True, slots=True)
class Keys:
    recipients: tuple[object, ...] = ()
    identities: tuple[object, ...] = ()
    passphrase: str | None = None
    signing_key: Ed25519PrivateKey | None = None   # to create
    verify_key: Ed25519PublicKey | None = None     # to verify and restore


def read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None


def recipients_from(values: Iterable[str]) -> tuple[object, ...]:
    result = []
    for value in values:
        for line in value.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                result.append(pyrage.x25519.Recipient.from_str(line))
            except pyrage.RecipientError:
                raise BackupError("not an age recipient (age1...)") from None
    return tuple(result)


def identities_from(text: str) -> tuple[object, ...]:
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            result.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise BackupError("the identity file holds something that is not an age "
                              "identity (AGE-SECRET-KEY-...)") from None
    if not result:
        raise BackupError("the identity file holds no age identity")
    return tuple(result)


def encrypt_stream(produce: Callable[[BinaryIO], None], out: BinaryIO, keys: Keys) -> None:
    """Run ``produce(writer)`` in a thread; what it writes is encrypted into ``out``, and
    the encrypted file is signed."""
    if keys.signing_key is None:
        raise BackupError("give --signing-key-file: every backup is signed")
    recipients = list(keys.recipients)
    out = SigningWriter(out)  # type: ignore[assignment]
    if keys.passphrase is not None:
        session = pyrage.x25519.Identity.generate()
        wrapped = pyrage.passphrase.encrypt(str(session).encode(), keys.passphrase)
        out.write(PASSPHRASE_MAGIC + struct.pack(">I", len(wrapped)) + wrapped)
        recipients = [session.to_public()]
    if not recipients:
        raise BackupError("give --recipient/--recipient-file or --passphrase-file")
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def run() -> None:
        with open(write_fd, "wb", buffering=CHUNK) as writer:
            try:
                produce(writer)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=run, name="backup-producer", daemon=True)
    thread.start()
    with open(read_fd, "rb", buffering=CHUNK) as reader:
        try:
            pyrage.encrypt_io(reader, out, recipients)
        finally:
            # Unblocks the producer if encryption stopped early.
            with contextlib.suppress(OSError):
                reader.read()
    thread.join()
    if failure:
        raise failure[0]
    out.finish(keys.signing_key)  # type: ignore[attr-defined]


class _SignedReader(io.RawIOBase):
    """The signed body of a backup file, hashed as it is read, so that a file changed
    after its signature was checked is caught: ``finish`` compares the digests."""

    def __init__(self, handle: BinaryIO, signed: SignedBody) -> None:
        self._handle = handle
        self._signed = signed
        self._left = signed.length
        self._digest = hashlib.sha512()
        self._replay = b""

    def readable(self) -> bool:
        return True

    def unread(self, data: bytes) -> None:
        self._replay = data + self._replay

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._replay:
            size = min(len(buffer), len(self._replay))
            buffer[:size] = self._replay[:size]
            self._replay = self._replay[size:]
            return size
        data = self._handle.read(min(len(buffer), self._left))
        self._left -= len(data)
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        while self.read(CHUNK):
            pass
        if self._left or self._digest.digest() != self._signed.sha512:
            raise BackupError("the backup file changed while it was being read")


def _open_identities(source: _SignedReader, keys: Keys) -> list[object]:
    head = source.read(len(PASSPHRASE_MAGIC))
    if head == PASSPHRASE_MAGIC:
        if keys.passphrase is None:
            raise BackupError("this backup was made with a passphrase: give --passphrase-file")
        (length,) = struct.unpack(">I", source.read(4).rjust(4, b"\0"))
        wrapped = source.read(length)
        if len(wrapped) != length:
            raise BackupError("the backup file is truncated")
        try:
            session = pyrage.passphrase.decrypt(wrapped, keys.passphrase)
        except pyrage.DecryptError:
            raise BackupError("wrong passphrase, or the backup file was altered") from None
        return [pyrage.x25519.Identity.from_str(session.decode())]
    source.unread(head)
    if not keys.identities:
        raise BackupError("this backup is encrypted to a recipient: give --identity-file")
    return list(keys.identities)


def signature_of(path: Path, keys: Keys) -> SignedBody:
    if keys.verify_key is None:
        raise BackupError("give --verify-key-file: only signed backups are read")
    return check_signature(path, keys.verify_key)


@contextlib.contextmanager
def decrypted(path: Path, keys: Keys, signed: SignedBody | None = None
              ) -> Iterator[BinaryIO]:
    """The plaintext of ``path`` as a readable stream, decrypted by a thread as it is read.

    The signature is checked over the whole file first (or was, giving ``signed``), so no
    byte of a file the signing key did not make reaches the decryption. A decryption
    failure (wrong key, truncation, tampering) raises BackupError at exit even when the
    reader had stopped early."""
    if signed is None:
        signed = signature_of(path, keys)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []
    with handle:
        raw = _SignedReader(handle, signed)
        try:
            identities = _open_identities(raw, keys)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        source = io.BufferedReader(raw, CHUNK)

        def run() -> None:
            with open(write_fd, "wb", buffering=CHUNK) as writer:
                try:
                    pyrage.decrypt_io(source, writer, identities)
                except BrokenPipeError:
                    pass
                except BaseException as exc:
                    failure.append(exc)

        thread = threading.Thread(target=run, name="backup-decrypt", daemon=True)
        thread.start()
        reader = open(read_fd, "rb", buffering=CHUNK)  # noqa: SIM115 - closed below
        try:
            yield reader
            # The reader may stop at the tar end marker; age's own end-of-stream check
            # (truncation) comes only after the last byte, so read to the end.
            while reader.read(CHUNK):
                pass
        except BaseException:
            reader.close()
            thread.join()
            if failure:
                raise _decrypt_error(failure[0]) from None
            raise
        reader.close()
        thread.join()
        if failure:
            raise _decrypt_error(failure[0]) from None
        raw.finish()


def _decrypt_error(exc: BaseException) -> BackupError:
    text = str(exc).lower()
    if "no matching keys" in text or "no identity" in text:
        return BackupError("wrong key: none of the given identities can open this backup")
    return BackupError(f"the backup file is truncated or was altered, and cannot be "
                       f"decrypted ({exc})")

