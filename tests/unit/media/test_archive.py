"""The archive checks: every hostile shape is refused before a byte is inflated."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import zipfile
from pathlib import Path

import pytest

from services.media.imports.archive import (
    ArchiveError,
    ArchiveLimits,
    looks_like_zip,
    open_archive,
    unsafe_name_reason,
)
from tests.media_archives import (
    activities_csv,
    gpx,
    jpeg,
    overlap_bomb,
    ratio_bomb,
    symlink_zip,
    with_declared_size,
    with_flag_bit,
    zip_bytes,
)

LIMITS = ArchiveLimits(max_entries=50, max_uncompressed_bytes=50 * 1024 * 1024,
                       max_ratio=200)


def write(tmp_path: Path, data: bytes, name: str = "upload.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(tmp_path: Path, data: bytes, limits: ArchiveLimits = LIMITS) -> ArchiveError:
    with pytest.raises(ArchiveError) as caught:
        open_archive(write(tmp_path, data), limits).close()
    return caught.value


def test_a_plain_export_opens_and_lists_its_entries(tmp_path: Path) -> None:
    data = zip_bytes([("activities.csv", activities_csv([])), ("activities/", b""),
                      ("activities/1.gpx", gpx()), ("media/a.jpg", jpeg())])
    with open_archive(write(tmp_path, data), LIMITS) as archive:
        assert [entry.name for entry in archive.files] == [
            "activities.csv", "activities/1.gpx", "media/a.jpg"]
        assert archive.get("activities/").is_dir
        entry = archive.get("activities/1.gpx")
        assert archive.read_bytes(entry, 1_000_000) == gpx()
        assert archive.inflated_bytes == len(gpx())


@pytest.mark.parametrize("name", [
    "../evil.jpg", "media/../../evil.jpg", "/etc/passwd", "\\evil.jpg",
    "media\\..\\..\\evil.jpg", "C:/Windows/evil.jpg", "c:evil.jpg", "media/./a.jpg",
    "media//a.jpg", "..", "media/\uff0e\uff0e/\uff0e\uff0e/evil.jpg",
    "media\uff0f..\uff0f..\uff0fevil.jpg", "media/a\x01.jpg",
])
def test_unsafe_entry_names_refuse_the_whole_archive(tmp_path: Path, name: str) -> None:
    data = zip_bytes([("activities.csv", activities_csv([])), (name, jpeg())])
    error = refused(tmp_path, data)
    assert error.code == "unsafe_entry_name"
    assert error.status == 400


def test_nul_in_entry_name_is_refused(tmp_path: Path) -> None:
    # zipfile cuts a name at its first NUL when writing, so the byte goes in by hand.
    data = zip_bytes([("media/aXb.jpg", jpeg())]).replace(b"media/aXb.jpg", b"media/a\x00b.jpg")
    assert refused(tmp_path, data).code == "unsafe_entry_name"


@pytest.mark.parametrize("name", ["activities.csv", "media/a.jpg", "activities/1.fit.gz",
                                  "media/", "Ünïcode/ファイル.jpg"])
def test_ordinary_names_are_safe(name: str) -> None:
    assert unsafe_name_reason(name) is None


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, symlink_zip())
    assert error.code == "special_file_entry"
    assert error.entry == "media/link.jpg"


def test_fifo_entry_is_refused(tmp_path: Path) -> None:
    out = zip_bytes([("activities.csv", b"")])
    path = write(tmp_path, out)
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo("media/pipe")
        info.create_system = 3
        info.external_attr = 0o010644 << 16
        archive.writestr(info, b"")
    assert refused(tmp_path, path.read_bytes()).code == "special_file_entry"


def test_encrypted_entry_is_refused(tmp_path: Path) -> None:
    data = with_flag_bit(zip_bytes([("activities.csv", b""), ("media/a.jpg", jpeg())]),
                         "media/a.jpg", 0x1)
    error = refused(tmp_path, data)
    assert error.code == "encrypted_entry"
    assert error.entry == "media/a.jpg"


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b"<html><body>not a zip</body></html>" * 10)
    assert error.code == "corrupt_archive"
    assert not looks_like_zip(b"<html>")
    assert looks_like_zip(zip_bytes([("a", b"b")]))


def test_a_truncated_zip_is_refused(tmp_path: Path) -> None:
    data = zip_bytes([("activities.csv", activities_csv([])), ("media/a.jpg", jpeg())])
    assert looks_like_zip(data[: len(data) // 2])
    assert refused(tmp_path, data[: len(data) // 2]).code == "corrupt_archive"
    assert refused(tmp_path, data[:-5]).code == "corrupt_archive"


def test_more_entries_than_the_limit_are_refused(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_entries=10)
    data = zip_bytes([(f"media/{index}.jpg", b"x") for index in range(11)])
    assert refused(tmp_path, data, limits).code == "too_many_entries"
    with open_archive(write(tmp_path, zip_bytes(
            [(f"media/{index}.jpg", b"x") for index in range(10)])), limits) as archive:
        assert len(archive.files) == 10


def test_the_real_entry_count_is_used_when_the_end_record_lies(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_entries=10)
    data = bytearray(zip_bytes([(f"media/{index}.jpg", b"x") for index in range(30)]))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = (1).to_bytes(2, "little") * 2
    assert refused(tmp_path, bytes(data), limits).code == "too_many_entries"


def test_a_high_ratio_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    error = refused(tmp_path, ratio_bomb())
    assert error.code == "compression_ratio_exceeded"
    assert error.entry == "media/bomb.jpg"


def test_highly_compressible_small_entries_are_within_the_grace(tmp_path: Path) -> None:
    data = zip_bytes([("activities.csv", b"\x00" * 900_000)])
    with open_archive(write(tmp_path, data), LIMITS) as archive:
        assert len(archive.read_bytes(archive.get("activities.csv"), 1_000_000)) == 900_000


def test_declared_total_over_the_limit_is_refused(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_uncompressed_bytes=1000)
    data = zip_bytes([("a", b"x" * 600), ("b", b"y" * 600)], zipfile.ZIP_STORED)
    assert refused(tmp_path, data, limits).code == "archive_too_large"


def test_overlapping_entries_are_refused(tmp_path: Path) -> None:
    data = overlap_bomb()
    # The structure is otherwise sound: zipfile itself reads every entry of it.
    with zipfile.ZipFile(write(tmp_path, data, "raw.zip")) as raw:
        assert len(raw.namelist()) == 8
        assert raw.read("media/00.jpg")
    assert refused(tmp_path, data).code == "overlapping_entries"


def test_inflated_bytes_are_counted_while_reading_not_taken_from_headers(
        tmp_path: Path) -> None:
    data = zip_bytes([("media/a.bin", b"abc" * 100_000)])
    with open_archive(write(tmp_path, data), LIMITS) as archive:
        # The headers passed the checks; the running count still stops the read.
        archive.limits = dataclasses.replace(LIMITS, max_uncompressed_bytes=100_000)
        with pytest.raises(ArchiveError) as caught:
            archive.read_bytes(archive.get("media/a.bin"), 1_000_000)
    assert caught.value.code == "archive_too_large"


def test_the_ratio_is_enforced_while_inflating(tmp_path: Path) -> None:
    data = zip_bytes([("media/a.bin", b"\x00" * 3_000_000)])
    with open_archive(write(tmp_path, data), dataclasses.replace(LIMITS, max_ratio=10_000)
                      ) as archive:
        archive.limits = LIMITS
        with pytest.raises(ArchiveError) as caught:
            archive.read_bytes(archive.get("media/a.bin"), 10_000_000)
    assert caught.value.code == "compression_ratio_exceeded"


def test_an_entry_whose_header_understates_its_size_is_refused(tmp_path: Path) -> None:
    data = with_declared_size(zip_bytes([("media/a.bin", b"abc" * 10_000)]), "media/a.bin", 10)
    with open_archive(write(tmp_path, data), LIMITS) as archive, \
            pytest.raises(ArchiveError) as caught:
        archive.read_bytes(archive.get("media/a.bin"), 100_000)
    assert caught.value.code == "corrupt_entry"


def test_duplicate_entry_names_are_refused(tmp_path: Path) -> None:
    out = write(tmp_path, zip_bytes([("media/a.jpg", jpeg())]))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(out, "a") as archive:
        archive.writestr("media/a.jpg", jpeg((1, 2, 3)))
    assert refused(tmp_path, out.read_bytes()).code == "duplicate_entry"


def test_unsupported_compression_is_refused(tmp_path: Path) -> None:
    data = zip_bytes([("media/a.jpg", jpeg())], zipfile.ZIP_BZIP2)
    assert refused(tmp_path, data).code == "unsupported_compression"


async def test_entries_stream_in_bounded_chunks(tmp_path: Path) -> None:
    payload = random.Random(7).randbytes(2 * 1024 * 1024)
    data = zip_bytes([("media/big.bin", payload)])
    loop = asyncio.get_running_loop()
    archive = await loop.run_in_executor(None, open_archive, write(tmp_path, data), LIMITS)
    with archive:
        sizes = []
        collected = bytearray()
        async for chunk in archive.iter_entry(archive.get("media/big.bin"), 64 * 1024):
            sizes.append(len(chunk))
            collected.extend(chunk)
    assert bytes(collected) == payload
    assert max(sizes) <= 64 * 1024
    assert len(sizes) >= len(payload) // (64 * 1024)
