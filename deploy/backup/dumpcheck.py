"""Reading a dump's table of contents and schema as its bytes stream past, for the restore
policy: ``pg_restore --list`` and ``pg_restore --schema-only`` each read the dump on stdin
and print to a pipe, nothing is written to disk and nothing touches a database."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from typing import BinaryIO

from deploy.backup.common import BackupError

# The schema of this project is a few hundred lines; a dump whose schema alone is larger
# than this is not one of its backups.
MAX_SCHEMA_BYTES = 16 * 1024 * 1024


class _Reader:
    """One pg_restore that reads from our pipe and prints to another, drained by a thread."""

    def __init__(self, pg_restore: str, *options: str) -> None:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish
        self.process = subprocess.Popen(  # noqa: S603
            [pg_restore, *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errors)
        self.output = bytearray()
        self.overflow = False
        self.open = True
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name="backup-dump-reader")
        self._thread.start()

    def _drain(self) -> None:
        stdout: BinaryIO = self.process.stdout  # type: ignore[assignment]
        with stdout:
            while chunk := stdout.read(64 * 1024):
                if len(self.output) + len(chunk) > MAX_SCHEMA_BYTES:
                    self.overflow = True
                    continue
                self.output += chunk

    def feed(self, chunk: bytes) -> None:
        if not self.open:
            return
        try:
            self.process.stdin.write(chunk)  # type: ignore[union-attr]
        except BrokenPipeError:
            # --list stops reading once it has the table of contents.
            self.open = False

    def finish(self) -> str:
        try:
            if self.open:
                with contextlib.suppress(BrokenPipeError):
                    self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait()
            self._thread.join()
            if self.process.returncode != 0:
                self.errors.seek(0)
                message = self.errors.read(4096).decode(errors="replace").strip()
                raise BackupError(f"pg_restore cannot read the backup's dump: {message}")
            if self.overflow:
                raise BackupError("the backup's database schema is far larger than this "
                                  "project's; refusing it")
            return self.output.decode(errors="replace")
        finally:
            self.errors.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._thread.join()
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()  # type: ignore[union-attr]
        self.errors.close()


class DumpReader:
    """Feed it the dump (``feed``), then ``finish`` gives its listing and schema SQL."""

    def __init__(self, pg_restore: str) -> None:
        self._listing = _Reader(pg_restore, "--list")
        try:
            self._schema = _Reader(pg_restore, "--schema-only", "--no-owner", "--file=-")
        except BaseException:
            self._listing.kill()
            raise

    def feed(self, chunk: bytes) -> None:
        self._listing.feed(chunk)
        self._schema.feed(chunk)

    def finish(self) -> tuple[str, str]:
        try:
            return self._listing.finish(), self._schema.finish()
        finally:
            self.kill()

    def kill(self) -> None:
        self._listing.kill()
        self._schema.kill()
