"""Encrypted, signed backups of the database and the media tree, with a tested restore.

    python -m deploy.backup create  --out FILE | --out-dir DIR  --signing-key-file KEY
                                    (--recipient | --passphrase-file)
    python -m deploy.backup verify  --in FILE --verify-key-file PUB
                                    (--identity-file | --passphrase-file)
    python -m deploy.backup restore --in FILE --verify-key-file PUB
                                    (--identity-file | --passphrase-file)
    python -m deploy.backup prune   --dir DIR [--keep-daily 7 --keep-weekly 4 --keep-monthly 12]

A backup is one age-encrypted tar stream: ``pg_dump --format=custom`` cut into parts, every
file of the media tree, and last a manifest with each member's SHA-256. It is produced and
consumed as a stream: no unencrypted byte is ever written to disk, and memory stays bounded
by one part. age authenticates every 64 KiB chunk and the end of the stream, so a wrong key,
a truncated file or a changed byte is an error, never silently different data. The
encrypted file ends with an Ed25519 signature over all of it (``signing``), checked before
anything is decrypted: the recipient is public, the signing key is not.

Restore goes only into an empty database and an empty media root, as the restore role
(never a superuser). It first verifies the whole file while pg_restore reads the dump's
contents, refusing a dump that holds what no backup of this project does (``policy``), then
restores in a second pass (``pg_restore --single-transaction``), checking every checksum
again; on any failure the restored files are removed and the transaction is rolled back,
so nothing is left half-restored.

With a passphrase, the stream is encrypted to a fresh x25519 key made for that backup, and
that key, encrypted with the passphrase (age scrypt), leads the file. With a recipient the
file is plain age but for the 96-byte signature trailer:
``head -c -96 FILE | age -d -i key.txt | tar t`` reads it too.
"""
from deploy.backup import archive, restoring, streams
from deploy.backup.archive import MANIFEST, create, verify
from deploy.backup.cli import audit, main
from deploy.backup.common import BackupError
from deploy.backup.prune import backup_name, backup_time, prune, to_keep
from deploy.backup.restoring import restore
from deploy.backup.streams import Keys, decrypted, identities_from, recipients_from
from deploy.backup.tools import Database, database_from, find_tool

__all__ = [
    "MANIFEST", "BackupError", "Database", "Keys", "archive", "audit", "backup_name",
    "backup_time", "create", "database_from", "decrypted", "find_tool", "identities_from",
    "main", "prune", "recipients_from", "restore", "restoring", "streams",
    "to_keep", "verify",
]
