"""Reading a ZIP archive made by someone else, trusting none of it.

An archive is opened only from a file on disk. Every entry is checked before a single
byte is inflated: its name, its type, its encryption, the entry count, the sizes and the
compression ratio the headers declare, and that no two entries share bytes (the
overlapping-entries "better zip bomb"). Headers can lie, so the sizes are counted again
while inflating: each entry is bounded by its own ratio, the whole archive by a total.
Nothing here writes a file: entries are read as streams of chunks and the caller decides
where the bytes go, under names the service makes up itself.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import re
import stat
import struct
import threading
import unicodedata
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import BadRequestError

CHUNK_SIZE = 256 * 1024
# Small entries compress absurdly well (a CSV of zeros, an empty GPX track); the ratio
# bound only applies once an entry has produced this much.
RATIO_GRACE_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 1024

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_FLAG_ENCRYPTED = 0x1
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
# MS-DOS/NTFS attribute of a symbolic link or junction, in the low bits of external_attr.
_DOS_REPARSE_POINT = 0x400
_DOS_DIRECTORY = 0x10
_SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(BadRequestError):
    """The archive, or one entry in it, is refused. ``entry`` names the culprit if any."""

    code = "invalid_archive"
    message = "The archive cannot be imported."

    def __init__(self, message: str, *, code: str, entry: str | None = None) -> None:
        extra = {"entry": entry} if entry is not None else {}
        super().__init__(message, code=code, **extra)
        self.entry = entry


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_entries: int = 100_000
    max_uncompressed_bytes: int = 5_000_000_000
    max_ratio: float = 200.0
    ratio_grace_bytes: int = RATIO_GRACE_BYTES

    def entry_limit(self, compressed_size: int) -> int:
        """How many inflated bytes an entry of this compressed size may produce."""
        return max(self.ratio_grace_bytes, int(self.max_ratio * compressed_size))


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    compressed_size: int
    declared_size: int
    is_dir: bool
    info: zipfile.ZipInfo = field(compare=False, repr=False)


def looks_like_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def unsafe_name_reason(name: str) -> str | None:
    """Why an entry name is unsafe, or None. Checked raw and after Unicode NFKC folding,
    so that fullwidth dots and slashes cannot spell a traversal another tool would see."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return "it is too long"
    for candidate in dict.fromkeys((name, unicodedata.normalize("NFKC", name))):
        reason = _unsafe_form_reason(candidate)
        if reason is not None:
            return reason
    return None


def _unsafe_form_reason(name: str) -> str | None:
    if "\x00" in name:
        return "it contains a NUL byte"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "it contains a control character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    parts = name.split("/")
    if parts[-1] == "":
        parts = parts[:-1]
    if any(part in {"", ".", ".."} for part in parts):
        return "it has an empty, '.' or '..' component"
    normalised = posixpath.normpath(name)
    if normalised == ".." or normalised.startswith(("../", "/")):
        return "it resolves outside the archive"
    return None


def _special_file_reason(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind not in {stat.S_IFREG, stat.S_IFDIR}:
        return "a symbolic link" if kind == stat.S_IFLNK else "a special file"
    if info.external_attr & _DOS_REPARSE_POINT:
        return "a symbolic link"
    return None


def _is_dir(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return (info.orig_filename.endswith("/") or stat.S_ISDIR(mode)
            or bool(info.external_attr & _DOS_DIRECTORY and not mode))


def _end_record(fp) -> tuple[int, int, int]:
    """(declared entry count, central directory offset, size) from the end record."""
    # zipfile's end-record reader handles the comment search and Zip64; the public API
    # offers no way to read the record without also parsing every entry into memory.
    endrec = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
    if not endrec:
        raise ArchiveError("The file is not a ZIP archive, or it is truncated.",
                           code="corrupt_archive")
    size_cd = endrec[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    offset_cd = endrec[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    concat = endrec[zipfile._ECD_LOCATION] - size_cd - offset_cd  # type: ignore[attr-defined]
    if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    start = offset_cd + concat
    if start < 0:
        raise ArchiveError("The archive's central directory is damaged.",
                           code="corrupt_archive")
    return endrec[zipfile._ECD_ENTRIES_TOTAL], start, size_cd  # type: ignore[attr-defined]


def _count_central_directory(fp, start: int, size: int, max_entries: int) -> int:
    """Walk the central directory without keeping it, stopping past ``max_entries``.

    The declared count in the end record can lie; zipfile would parse every record the
    directory holds into memory, so the real count is taken first.
    """
    fp.seek(start)
    position = 0
    count = 0
    while position < size:
        header = fp.read(_CENTRAL_HEADER.size)
        if len(header) != _CENTRAL_HEADER.size or header[:4] != _CENTRAL_SIGNATURE:
            raise ArchiveError("The archive's central directory is damaged.",
                               code="corrupt_archive")
        fields = _CENTRAL_HEADER.unpack(header)
        variable = fields[12] + fields[13] + fields[14]
        fp.seek(variable, io.SEEK_CUR)
        position += _CENTRAL_HEADER.size + variable
        count += 1
        if count > max_entries:
            raise _too_many(max_entries)
    return count


def _too_many(max_entries: int) -> ArchiveError:
    return ArchiveError(f"The archive has more than {max_entries} entries.",
                        code="too_many_entries")


class Archive:
    """An opened, fully checked archive. Use as a context manager; reads are serialised."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.path = path
        self.limits = limits
        self._lock = threading.Lock()
        self.inflated_bytes = 0
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._zip, self.entries = self._inspect()
        except BaseException:
            self._file.close()
            raise
        self._by_name = {entry.name: entry for entry in self.entries}

    # Opening and checking -------------------------------------------------------------

    def _inspect(self) -> tuple[zipfile.ZipFile, list[Entry]]:
        limits = self.limits
        declared, start, size = _end_record(self._file)
        if declared > limits.max_entries:
            raise _too_many(limits.max_entries)
        _count_central_directory(self._file, start, size, limits.max_entries)
        try:
            archive = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError,
                EOFError, struct.error) as exc:
            raise ArchiveError("The ZIP archive is damaged.", code="corrupt_archive") from exc
        try:
            entries = self._check_entries(archive, archive.infolist())
            self._check_layout(archive)
        except BaseException:
            archive.close()
            raise
        return archive, entries

    def _check_entries(self, archive: zipfile.ZipFile,
                       infos: list[zipfile.ZipInfo]) -> list[Entry]:
        limits = self.limits
        if len(infos) > limits.max_entries:
            raise _too_many(limits.max_entries)
        seen: set[str] = set()
        entries = []
        declared_total = 0
        for info in infos:
            name = info.orig_filename
            reason = unsafe_name_reason(name)
            if reason is not None:
                raise ArchiveError(f"An entry name is unsafe: {reason}.",
                                   code="unsafe_entry_name", entry=_printable(name))
            if name in seen:
                raise ArchiveError("Two entries have the same name.",
                                   code="duplicate_entry", entry=name)
            seen.add(name)
            special = _special_file_reason(info)
            if special is not None:
                raise ArchiveError(f"The entry is {special}; only plain files are accepted.",
                                   code="special_file_entry", entry=name)
            if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
                raise ArchiveError("The entry is encrypted; encrypted archives are refused.",
                                   code="encrypted_entry", entry=name)
            is_dir = _is_dir(info)
            if not is_dir and info.compress_type not in _SUPPORTED_COMPRESSION:
                raise ArchiveError("The entry uses a compression method that is not "
                                   "supported (only stored and deflate).",
                                   code="unsupported_compression", entry=name)
            if info.file_size > limits.entry_limit(info.compress_size):
                raise ArchiveError(
                    f"The entry's compression ratio is over {limits.max_ratio:g}:1.",
                    code="compression_ratio_exceeded", entry=name)
            declared_total += info.file_size
            if declared_total > limits.max_uncompressed_bytes:
                raise _too_large(limits)
            entries.append(Entry(name=name, compressed_size=info.compress_size,
                                 declared_size=info.file_size, is_dir=is_dir, info=info))
        return entries

    def _check_layout(self, archive: zipfile.ZipFile) -> None:
        """Every entry's bytes lie apart from every other's and before the directory."""
        directory_start = archive.start_dir
        spans = []
        for info in archive.infolist():
            self._file.seek(info.header_offset)
            header = self._file.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
                raise ArchiveError("An entry's local header is missing or damaged.",
                                   code="corrupt_archive", entry=info.orig_filename)
            fields = _LOCAL_HEADER.unpack(header)
            flags, name_length, extra_length = fields[3], fields[10], fields[11]
            raw_name = self._file.read(name_length)
            try:
                local_name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437")
            except UnicodeDecodeError:
                local_name = None
            if local_name != info.orig_filename:
                raise ArchiveError("An entry's local name differs from its directory name.",
                                   code="corrupt_archive", entry=info.orig_filename)
            if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
                raise ArchiveError("The entry is encrypted; encrypted archives are refused.",
                                   code="encrypted_entry", entry=info.orig_filename)
            data_end = (info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                        + info.compress_size)
            spans.append((info.header_offset, data_end, info.orig_filename))
        spans.sort()
        previous_end = 0
        for begin, end, name in spans:
            if begin < previous_end or end > directory_start:
                raise ArchiveError("Entries overlap each other or the directory; this is "
                                   "the shape of a ZIP bomb.",
                                   code="overlapping_entries", entry=name)
            previous_end = end

    # Reading ---------------------------------------------------------------------------

    def get(self, name: str) -> Entry | None:
        return self._by_name.get(name)

    @property
    def files(self) -> list[Entry]:
        return [entry for entry in self.entries if not entry.is_dir]

    def open_entry(self, entry: Entry) -> io.BufferedReader:
        """A blocking reader of the entry's inflated bytes, bounded while it reads."""
        return io.BufferedReader(_BoundedEntry(self, entry), buffer_size=CHUNK_SIZE)

    def read_bytes(self, entry: Entry, max_bytes: int) -> bytes:
        """A small entry in full (a manifest), refused when longer than ``max_bytes``."""
        with self.open_entry(entry) as reader:
            data = reader.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ArchiveError(f"The entry is larger than {max_bytes} bytes.",
                               code="entry_too_large", entry=entry.name)
        return data

    async def iter_entry(self, entry: Entry, chunk_size: int = CHUNK_SIZE
                         ) -> AsyncIterator[bytes]:
        """The entry's bytes as chunks, inflated in an executor, never whole in memory."""
        loop = asyncio.get_running_loop()
        # Opening reads the entry's local header from disk, so it is done off the loop too.
        raw = await loop.run_in_executor(None, _BoundedEntry, self, entry)
        try:
            while True:
                chunk = await loop.run_in_executor(None, raw.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            raw.close()

    def _count(self, count: int, entry: Entry) -> None:
        with self._lock:
            self.inflated_bytes += count
            if self.inflated_bytes > self.limits.max_uncompressed_bytes:
                raise _too_large(self.limits, entry.name)

    def close(self) -> None:
        try:
            self._zip.close()
        finally:
            self._file.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _BoundedEntry(io.RawIOBase):
    """One entry's inflated bytes, counted against its ratio and the archive's total."""

    def __init__(self, archive: Archive, entry: Entry) -> None:
        super().__init__()
        if entry.is_dir:
            raise ArchiveError("A directory has no content.", code="not_a_file",
                               entry=entry.name)
        self._archive = archive
        self._entry = entry
        self._limit = archive.limits.entry_limit(entry.compressed_size)
        self._produced = 0
        try:
            self._stream = archive._zip.open(entry.info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError,
                EOFError, struct.error) as exc:
            raise _corrupt(entry) from exc

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(len(buffer))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise _corrupt(self._entry) from exc
        count = len(data)
        self._produced += count
        if self._produced > self._limit:
            raise ArchiveError(
                f"The entry inflates past a {self._archive.limits.max_ratio:g}:1 "
                "compression ratio; it looks like a ZIP bomb.",
                code="compression_ratio_exceeded", entry=self._entry.name)
        self._archive._count(count, self._entry)
        buffer[:count] = data
        return count

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _corrupt(entry: Entry) -> ArchiveError:
    return ArchiveError("The entry is damaged and cannot be read.", code="corrupt_entry",
                        entry=entry.name)


def _too_large(limits: ArchiveLimits, entry: str | None = None) -> ArchiveError:
    return ArchiveError(
        f"The archive inflates to more than {limits.max_uncompressed_bytes} bytes.",
        code="archive_too_large", entry=entry)


def _printable(name: str) -> str:
    """The name as safe display text for an error message."""
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}"
                   for char in name)[:200]


def open_archive(path: Path, limits: ArchiveLimits) -> Archive:
    """Open and check the archive at ``path`` (blocking: run it in an executor)."""
    try:
        return Archive(path, limits)
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, OSError,
            UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError("The ZIP archive is damaged.", code="corrupt_archive") from exc


def names_under(entries: Iterable[Entry], prefix: str) -> list[str]:
    return [entry.name for entry in entries if entry.name.startswith(prefix)
            and not entry.is_dir]
