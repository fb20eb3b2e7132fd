"""``python -m services.auth reset-password``: the same policy, every session revoked,
audited; a clear message and a non-zero exit on any failure."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import asyncpg

from tests.integration.auth.auth_helpers import GOOD_PASSWORD, OTHER_GOOD_PASSWORD, AuthApi
from tests.support import ROOT


async def reset(env: dict[str, str], username: str,
                stdin: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.auth", "reset-password", "--username", username,
        cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), **env},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_reset_password_sets_it_revokes_sessions_and_audits(
        api: AuthApi, db: asyncpg.Connection, auth_env: dict[str, str],
        database_url: str) -> None:
    token = await api.registered_token()
    other = await api.login_token()
    announced: list[dict] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener("tempo_revocations",
                                lambda *args: announced.append(json.loads(args[-1])))
    try:
        code, out, err = await reset({**auth_env, "Log__Level": "info"}, "runner",
                                     OTHER_GOOD_PASSWORD + "\n")
        await asyncio.sleep(0.2)
    finally:
        await listener.close()

    assert code == 0, err
    assert "2 session(s) revoked" in out
    assert {item["jti"] for item in announced} == {api.claims(token).token_id,
                                                   api.claims(other).token_id}
    assert (await api.request("GET", "/auth/me", token)).status == 401
    assert (await api.login(password=GOOD_PASSWORD)).status == 401
    assert (await api.login(password=OTHER_GOOD_PASSWORD)).status == 200
    event = await db.fetchrow("SELECT * FROM auth.auth_events"
                              " WHERE event = 'admin_password_reset'")
    assert event["outcome"] == "success"
    assert event["username"] == "Runner"
    assert json.loads(event["detail"])["sessions_revoked"] == 2
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("auth_event") == "admin_password_reset" for line in logged)
    assert OTHER_GOOD_PASSWORD not in out + err


async def test_reset_password_clears_a_lockout(api: AuthApi, db: asyncpg.Connection,
                                               auth_env: dict[str, str]) -> None:
    await api.register()
    for _ in range(5):
        await api.login(password="wrong-password-1")
    assert (await api.login()).status == 429
    code, _, err = await reset(auth_env, "Runner", OTHER_GOOD_PASSWORD)
    assert code == 0, err
    assert (await api.login(password=OTHER_GOOD_PASSWORD)).status == 200


async def test_reset_password_for_an_unknown_user_fails_clearly(
        api: AuthApi, auth_env: dict[str, str]) -> None:
    await api.register()
    code, _, err = await reset(auth_env, "nobody", OTHER_GOOD_PASSWORD)
    assert code == 1
    assert "No user named 'nobody'" in err


async def test_reset_password_applies_the_policy(api: AuthApi, db: asyncpg.Connection,
                                                 auth_env: dict[str, str]) -> None:
    token = await api.registered_token()
    for weak, words in [("short-1A!", "at least 12"), ("passwordpassword", "easy to guess"),
                        ("é" * 37, "72 bytes")]:
        code, out, err = await reset(auth_env, "Runner", weak)
        assert code == 1
        assert words in err
        assert weak not in out + err
    assert (await api.request("GET", "/auth/me", token)).status == 200
    assert (await api.login()).status == 200
    assert await db.fetchval("SELECT count(*) FROM auth.auth_events"
                             " WHERE event = 'admin_password_reset'") == 0


async def test_reset_password_without_input_fails(api: AuthApi,
                                                  auth_env: dict[str, str]) -> None:
    await api.register()
    code, _, err = await reset(auth_env, "Runner", "")
    assert code == 1
    assert "no password" in err


async def test_reset_password_with_bad_settings_exits_2(auth_env: dict[str, str]) -> None:
    env = {**auth_env, "Auth__BcryptCost": "3"}
    code, _, err = await reset(env, "Runner", OTHER_GOOD_PASSWORD)
    assert code == 2
    assert "Auth__BcryptCost" in err
