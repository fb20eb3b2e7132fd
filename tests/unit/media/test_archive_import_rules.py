"""Import settings and the bounded error list, without a loop or a database."""

from __future__ import annotations

import pytest

from services.media.imports.settings import ImportSettings, load_import_settings
from services.media.imports.store import MAX_ERRORS, Progress
from services.media.settings import load_settings
from shared.config import Env, SettingsError
from tests.support import service_env, strong_secret


def settings(**env: str) -> ImportSettings:
    reader = Env(env)
    loaded = load_import_settings(reader)
    assert reader.problems == []
    return loaded


def problems(**env: str) -> list[str]:
    reader = Env(env)
    load_import_settings(reader)
    return reader.problems


def test_defaults_match_tempo() -> None:
    loaded = settings()
    assert loaded.max_file_size_bytes == 500_000_000
    assert loaded.max_entries == 100_000
    assert loaded.max_uncompressed_bytes == 5_000_000_000
    assert loaded.max_compression_ratio == 200
    assert loaded.activity_types == ("Run",)
    assert loaded.keep_archive is False
    limits = loaded.limits
    assert (limits.max_entries, limits.max_uncompressed_bytes, limits.max_ratio) == (
        100_000, 5_000_000_000, 200)
    assert limits.entry_limit(10) == 1024 * 1024
    assert limits.entry_limit(1_000_000) == 200_000_000


def test_every_setting_is_read() -> None:
    loaded = settings(Import__MaxFileSizeBytes="1000", Import__MaxEntries="7",
                      Import__MaxUncompressedBytes="5000", Import__MaxCompressionRatio="50",
                      Import__ActivityTypes="Run, Trail Run ,Walk", Import__KeepArchive="true",
                      Import__Workers="3", Import__MaxActivePerUser="2",
                      Import__StaleAfterSeconds="5", Import__MaxAttempts="4")
    assert loaded == ImportSettings(
        max_file_size_bytes=1000, max_entries=7, max_uncompressed_bytes=5000,
        max_compression_ratio=50.0, activity_types=("Run", "Trail Run", "Walk"),
        keep_archive=True, workers=3, max_active_per_user=2, stale_after_seconds=5.0,
        max_attempts=4)


def test_activity_types_compare_without_case() -> None:
    loaded = settings(Import__ActivityTypes="Run,Trail Run")
    assert loaded.counts_as_run("run")
    assert loaded.counts_as_run("TRAIL RUN")
    assert not loaded.counts_as_run("Ride")
    assert not loaded.counts_as_run("Virtual Run")


@pytest.mark.parametrize(("name", "value"), [
    ("Import__MaxFileSizeBytes", "0"), ("Import__MaxFileSizeBytes", "lots"),
    ("Import__MaxEntries", "-1"), ("Import__MaxUncompressedBytes", "0"),
    ("Import__MaxCompressionRatio", "0.5"), ("Import__KeepArchive", "maybe"),
    ("Import__ActivityTypes", " , "), ("Import__Workers", "0"),
])
def test_bad_values_are_problems_naming_the_variable(name: str, value: str) -> None:
    found = problems(**{name: value})
    assert len(found) == 1
    assert found[0].startswith(name)
    assert value.strip(" ,") == "" or value not in found[0]


def test_the_media_service_refuses_to_start_with_bad_import_settings() -> None:
    env = service_env("postgresql://u@127.0.0.1/db", jwt_key=strong_secret(),
                      internal_key=strong_secret(),
                      MediaStorage__RootPath="/srv/media", Import__MaxEntries="none")
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert any(p.startswith("Import__MaxEntries") for p in caught.value.problems)
    env["Import__MaxEntries"] = "10"
    assert load_settings(env).imports.max_entries == 10


def test_the_error_list_keeps_the_first_hundred_and_counts_the_rest() -> None:
    progress = Progress()
    for index in range(MAX_ERRORS + 25):
        progress.error(f"entry-{index}", "invalid", "bad")
    assert MAX_ERRORS == 100
    assert len(progress.errors) == 100
    assert progress.errors[0] == {"entry": "entry-0", "code": "invalid", "message": "bad"}
    assert progress.errors[-1]["entry"] == "entry-99"
    assert progress.errors_omitted == 25
