"""Revocation: logout, password change and session delete revoke tokens, the revoked set
is visible in auth.revoked_tokens, and each revocation is announced after it commits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.auth.maintenance import purge
from tests.integration.auth.auth_helpers import GOOD_PASSWORD, OTHER_GOOD_PASSWORD, AuthApi

CHANNEL = "tempo_revocations"


class Listener:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()

    def __call__(self, _connection, _pid, _channel, payload: str) -> None:
        self.queue.put_nowait(json.loads(payload))

    async def take(self, count: int) -> list[dict]:
        return [await asyncio.wait_for(self.queue.get(), 5) for _ in range(count)]

    async def nothing_more(self) -> None:
        # The announcing transaction has committed before the response was sent, so
        # anything it announced is already on its way; a short wait catches stragglers.
        await asyncio.sleep(0.2)
        assert self.queue.empty()


@pytest.fixture
async def listener(database_url: str, db: asyncpg.Connection) -> AsyncIterator[Listener]:
    connection = await asyncpg.connect(database_url)
    received = Listener()
    await connection.add_listener(CHANNEL, received)
    try:
        yield received
    finally:
        await connection.close()


async def revoked_jtis(db: asyncpg.Connection) -> set[str]:
    return {row["jti"] for row in await db.fetch("SELECT jti FROM auth.revoked_tokens")}


async def test_logout_revokes_the_token_and_announces_it(api: AuthApi, db: asyncpg.Connection,
                                                         listener: Listener) -> None:
    token = await api.registered_token()
    claims = api.claims(token)
    assert (await api.request("POST", "/auth/logout", token)).status == 200

    assert await listener.take(1) == [{"jti": claims.token_id, "expiresAt": claims.expires_at}]
    await listener.nothing_more()
    assert await revoked_jtis(db) == {claims.token_id}
    assert (await api.request("GET", "/auth/me", token)).status == 401
    # A second logout with the same token revokes nothing new and announces nothing.
    assert (await api.request("POST", "/auth/logout", token)).status == 200
    await listener.nothing_more()


async def test_password_change_revokes_every_session(api: AuthApi, db: asyncpg.Connection,
                                                     listener: Listener) -> None:
    token = await api.registered_token()
    others = [await api.login_token() for _ in range(2)]
    old = {api.claims(t).token_id for t in [token, *others]}

    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": OTHER_GOOD_PASSWORD})
    assert response.status == 200

    announced = await listener.take(3)
    assert {item["jti"] for item in announced} == old
    await listener.nothing_more()
    assert await revoked_jtis(db) == old
    for stale in [token, *others]:
        assert (await api.request("GET", "/auth/me", stale)).status == 401
    live = await db.fetch("SELECT jti FROM auth.sessions WHERE revoked_at IS NULL")
    assert len(live) == 1
    assert live[0]["jti"] not in old


async def test_session_delete_revokes_only_that_session(api: AuthApi, db: asyncpg.Connection,
                                                        listener: Listener) -> None:
    token = await api.registered_token()
    other = await api.login_token()
    other_claims = api.claims(other)
    session_id = await db.fetchval("SELECT id::text FROM auth.sessions WHERE jti = $1",
                                   other_claims.token_id)

    response = await api.request("DELETE", f"/auth/sessions/{session_id}", token)
    assert response.status == 204
    assert await listener.take(1) == [{"jti": other_claims.token_id,
                                       "expiresAt": other_claims.expires_at}]
    assert await revoked_jtis(db) == {other_claims.token_id}
    sessions = (await (await api.request("GET", "/auth/sessions", token)).json())["sessions"]
    assert [s["current"] for s in sessions] == [True]
    # Deleting it again is not an error and announces nothing.
    assert (await api.request("DELETE", f"/auth/sessions/{session_id}", token)).status == 204
    await listener.nothing_more()


async def test_a_rolled_back_revocation_is_never_announced(db: asyncpg.Connection,
                                                           api: AuthApi,
                                                           listener: Listener) -> None:
    token = await api.registered_token()
    transaction = db.transaction()
    await transaction.start()
    await db.execute("UPDATE auth.sessions SET revoked_at = now() WHERE jti = $1",
                     api.claims(token).token_id)
    await transaction.rollback()
    await listener.nothing_more()
    assert await revoked_jtis(db) == set()


async def test_revoked_tokens_view_leaves_out_expired_tokens(api: AuthApi,
                                                            db: asyncpg.Connection) -> None:
    token = await api.registered_token()
    await api.request("POST", "/auth/logout", token)
    await db.execute("UPDATE auth.sessions SET expires_at = now() - interval '1 second'")
    assert await revoked_jtis(db) == set()


async def test_purge_deletes_expired_sessions_only(api: AuthApi, db: asyncpg.Connection,
                                                   database_url: str) -> None:
    expired = api.claims(await api.registered_token()).token_id
    live = api.claims(await api.login_token()).token_id
    await db.execute("UPDATE auth.sessions SET expires_at = now() - interval '1 minute'"
                     " WHERE jti = $1", expired)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        sessions, _, _ = await purge(pool, stale_after=timedelta(hours=1))
    finally:
        await pool.close()
    assert sessions == 1
    assert {row["jti"] for row in await db.fetch("SELECT jti FROM auth.sessions")} == {live}


async def test_the_background_purge_runs_on_its_own(aiohttp_client, base_env: dict[str, str],
                                                    internal_key: str,
                                                    db: asyncpg.Connection) -> None:
    from services.auth.app import create_app
    from services.auth.settings import load_settings
    from tests.integration.auth.auth_helpers import user_codec

    settings = load_settings({**base_env, "Auth__BcryptCost": "10",
                              "Auth__SessionPurgeIntervalSeconds": "1"})
    api = AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                  user_codec(settings))
    await api.registered_token()
    await db.execute("UPDATE auth.sessions SET expires_at = now() - interval '1 minute'")
    for _ in range(50):
        if await db.fetchval("SELECT count(*) FROM auth.sessions") == 0:
            break
        await asyncio.sleep(0.1)
    assert await db.fetchval("SELECT count(*) FROM auth.sessions") == 0


async def test_a_token_for_an_unrecorded_session_is_refused(api: AuthApi) -> None:
    token = await api.registered_token()
    forged, _ = api.user_tokens.issue(api.claims(token).subject)
    assert (await api.request("GET", "/auth/me", forged)).status == 401
