"""Each endpoint's success path, and every bad input the endpoints refuse."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.integration.auth.auth_helpers import (
    GOOD_PASSWORD,
    OTHER_GOOD_PASSWORD,
    USERNAME,
    AuthApi,
    cookie_of,
)


async def test_registration_available_until_the_first_user_registers(api: AuthApi) -> None:
    response = await api.request("GET", "/auth/registration-available")
    assert response.status == 200
    assert await response.json() == {"registrationAvailable": True, "setupCodeRequired": False}

    assert (await api.register()).status == 201

    response = await api.request("GET", "/auth/registration-available")
    assert await response.json() == {"registrationAvailable": False,
                                     "setupCodeRequired": False}


async def test_register_creates_the_user_with_a_bcrypt_hash(api: AuthApi,
                                                             db: asyncpg.Connection) -> None:
    response = await api.register(username="  Runner  ")
    assert response.status == 201
    body = await response.json()
    assert body["message"] == "User registered successfully"
    assert body["username"] == USERNAME
    row = await db.fetchrow("SELECT id, username, username_key, password_hash FROM auth.users")
    assert str(row["id"]) == body["userId"]
    assert row["username"] == USERNAME
    assert row["username_key"] == "runner"
    assert row["password_hash"].startswith("$2b$10$")
    assert GOOD_PASSWORD not in row["password_hash"]


async def test_login_returns_user_and_expiry_and_records_the_session(
        api: AuthApi, db: asyncpg.Connection) -> None:
    await api.register()
    response = await api.login(username="runner")
    assert response.status == 200
    body = await response.json()
    user_id = await db.fetchval("SELECT id::text FROM auth.users")
    assert body["userId"] == user_id
    assert body["username"] == USERNAME
    claims = api.claims(cookie_of(response).value)
    assert claims.subject == user_id
    session = await db.fetchrow("SELECT * FROM auth.sessions")
    assert session["jti"] == claims.token_id
    assert int(session["expires_at"].timestamp()) == claims.expires_at
    assert body["expiresAt"].endswith("Z")
    assert session["ip"] == "203.0.113.7"
    assert session["user_agent"] == "pytest-browser"
    assert session["revoked_at"] is None
    assert await db.fetchval("SELECT last_login_at IS NOT NULL FROM auth.users")


async def test_me_describes_the_logged_in_user(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("GET", "/auth/me", token)
    assert response.status == 200
    body = await response.json()
    assert body["userId"] == api.claims(token).subject
    assert body["username"] == USERNAME
    assert body["createdAt"].endswith("Z")
    assert body["lastLoginAt"].endswith("Z")


async def test_sessions_lists_live_sessions_and_marks_the_current_one(api: AuthApi) -> None:
    token = await api.registered_token()
    other = await api.login_token()
    response = await api.request("GET", "/auth/sessions", token)
    assert response.status == 200
    sessions = (await response.json())["sessions"]
    assert len(sessions) == 2
    assert sorted(s["current"] for s in sessions) == [False, True]
    assert {s["ip"] for s in sessions} == {"203.0.113.7"}
    assert {s["userAgent"] for s in sessions} == {"pytest-browser"}
    assert other != token


async def test_logout_answers_and_clears_the_cookie(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/logout", token)
    assert response.status == 200
    assert await response.json() == {"message": "Logged out successfully"}
    assert cookie_of(response).value == ""
    assert cookie_of(response)["max-age"] == "0"


async def test_logout_without_a_session_still_clears_the_cookie(api: AuthApi) -> None:
    response = await api.request("POST", "/auth/logout")
    assert response.status == 200
    assert cookie_of(response)["max-age"] == "0"


async def test_password_change_sets_a_new_password_and_cookie(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": OTHER_GOOD_PASSWORD})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["username"] == USERNAME
    fresh = cookie_of(response).value
    assert api.claims(fresh).token_id != api.claims(token).token_id
    assert (await api.login(password=GOOD_PASSWORD)).status == 401
    assert (await api.login(password=OTHER_GOOD_PASSWORD)).status == 200
    assert (await api.request("GET", "/auth/me", fresh)).status == 200


async def test_delete_session_revokes_that_session(api: AuthApi) -> None:
    token = await api.registered_token()
    other = await api.login_token()
    sessions = (await (await api.request("GET", "/auth/sessions", token)).json())["sessions"]
    other_id = next(s["id"] for s in sessions if not s["current"])
    response = await api.request("DELETE", f"/auth/sessions/{other_id}", token)
    assert response.status == 204
    assert cookie_of(response) is None
    assert (await api.request("GET", "/auth/me", other)).status == 401
    assert (await api.request("GET", "/auth/me", token)).status == 200


async def test_deleting_the_current_session_clears_the_cookie(api: AuthApi) -> None:
    token = await api.registered_token()
    sessions = (await (await api.request("GET", "/auth/sessions", token)).json())["sessions"]
    response = await api.request("DELETE", f"/auth/sessions/{sessions[0]['id']}", token)
    assert response.status == 204
    assert cookie_of(response)["max-age"] == "0"
    assert (await api.request("GET", "/auth/me", token)).status == 401


async def test_health_and_ready(api: AuthApi) -> None:
    assert (await api.client.get("/health")).status == 200
    response = await api.request("GET", "/ready")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


# ------------------------------------------------------------------------- bad input

BODY_ENDPOINTS = ["/auth/register", "/auth/login"]


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_non_json_body_is_415(api: AuthApi, path: str) -> None:
    response = await api.request("POST", path, data="username=a&password=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_body_over_64_kib_is_413(api: AuthApi, path: str) -> None:
    response = await api.request("POST", path, json={"username": "a" * (65 * 1024),
                                                     "password": "x"})
    assert response.status == 413
    assert (await response.json())["code"] == "payload_too_large"


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_malformed_json_is_400(api: AuthApi, path: str) -> None:
    response = await api.request("POST", path, data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["code"] == "malformed_json"


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_json_that_is_not_an_object_is_400(api: AuthApi, path: str) -> None:
    response = await api.request("POST", path, json=["username", "password"])
    assert response.status == 400
    assert (await response.json())["code"] == "malformed_json"


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize(("body", "field", "code"), [
    ({"password": GOOD_PASSWORD}, "username", "missing_field"),
    ({"username": USERNAME}, "password", "missing_field"),
    ({"username": 42, "password": GOOD_PASSWORD}, "username", "invalid_field"),
    ({"username": USERNAME, "password": ["x"]}, "password", "invalid_field"),
    ({"username": None, "password": GOOD_PASSWORD}, "username", "missing_field"),
])
async def test_missing_or_mistyped_field_is_400_naming_it(api: AuthApi, path: str, body: dict,
                                                         field: str, code: str) -> None:
    response = await api.request("POST", path, json=body)
    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == field
    assert problem["code"] == code
    assert field in problem["error"]


@pytest.mark.parametrize(("username", "reason"), [
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 51, "50"),
    ("run\x07ner", "control"),
    ("run\nner", "control"),
    ("run\u200bner", "control"),  # zero-width space: an invisible format character
])
async def test_register_refuses_bad_usernames(api: AuthApi, db: asyncpg.Connection,
                                              username: str, reason: str) -> None:
    response = await api.register(username=username)
    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "username"
    assert problem["code"] == "invalid_username"
    assert reason in problem["error"]
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 0


async def test_register_accepts_a_fifty_character_username(api: AuthApi) -> None:
    assert (await api.register(username="x" * 50)).status == 201


@pytest.mark.parametrize(("password", "code", "words"), [
    ("Sh0rt-pw!", "password_too_short", "at least 12"),
    ("é" * 37, "password_too_long", "72 bytes"),
    ("passwordpassword", "password_too_weak", "easy to guess"),
    ("Runner-Runner-1", "password_too_weak", "easy to guess"),
])
async def test_register_refuses_weak_passwords_naming_the_rule(
        api: AuthApi, db: asyncpg.Connection, password: str, code: str, words: str) -> None:
    response = await api.register(password=password)
    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "password"
    assert problem["code"] == code
    assert words in problem["error"]
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 0


async def test_register_refuses_mismatched_confirmation(api: AuthApi) -> None:
    response = await api.request("POST", "/auth/register", json={
        "username": USERNAME, "password": GOOD_PASSWORD, "confirmPassword": "something-else"})
    assert response.status == 400
    assert (await response.json())["field"] == "confirmPassword"


async def test_register_accepts_matching_confirmation(api: AuthApi) -> None:
    response = await api.request("POST", "/auth/register", json={
        "username": USERNAME, "password": GOOD_PASSWORD, "confirmPassword": GOOD_PASSWORD})
    assert response.status == 201


async def test_second_registration_is_403_registration_closed(api: AuthApi,
                                                              db: asyncpg.Connection) -> None:
    assert (await api.register()).status == 201
    response = await api.register(username="Someone Else")
    assert response.status == 403
    assert (await response.json())["code"] == "registration_closed"
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 1


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/auth/me"),
    ("GET", "/auth/sessions"),
    ("POST", "/auth/password"),
    ("DELETE", f"/auth/sessions/{uuid.uuid4()}"),
])
async def test_user_endpoints_refuse_anonymous_callers(api: AuthApi, method: str,
                                                       path: str) -> None:
    await api.registered_token()
    response = await api.request(method, path, json={})
    assert response.status == 401
    assert (await response.json())["code"] == "unauthorized"


async def test_password_change_refuses_a_wrong_current_password(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": "not-the-password-at-all", "newPassword": OTHER_GOOD_PASSWORD})
    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "currentPassword"
    assert problem["code"] == "invalid_current_password"
    assert (await api.login()).status == 200


@pytest.mark.parametrize(("new", "code"), [
    ("short-1A!", "password_too_short"),
    ("é" * 37, "password_too_long"),
    ("passwordpassword", "password_too_weak"),
    (GOOD_PASSWORD, "password_unchanged"),
])
async def test_password_change_applies_the_policy_to_the_new_password(
        api: AuthApi, new: str, code: str) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": new})
    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "newPassword"
    assert problem["code"] == code
    assert (await api.request("GET", "/auth/me", token)).status == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"newPassword": OTHER_GOOD_PASSWORD}, "currentPassword"),
    ({"currentPassword": GOOD_PASSWORD}, "newPassword"),
    ({"currentPassword": GOOD_PASSWORD, "newPassword": 12}, "newPassword"),
])
async def test_password_change_missing_fields_are_400(api: AuthApi, body: dict,
                                                      field: str) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json=body)
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_password_change_refuses_non_json(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, data="x",
                                 headers={"Content-Type": "text/plain"})
    assert response.status == 415


async def test_delete_session_with_a_malformed_id_is_400(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("DELETE", "/auth/sessions/not-a-uuid", token)
    assert response.status == 400
    assert (await response.json())["field"] == "id"


async def test_delete_unknown_session_is_404(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("DELETE", f"/auth/sessions/{uuid.uuid4()}", token)
    assert response.status == 404
    assert (await response.json())["code"] == "session_not_found"


async def test_login_with_non_string_password_is_400(api: AuthApi) -> None:
    response = await api.login(password=12345678901234)  # type: ignore[arg-type]
    assert response.status == 400
    assert (await response.json())["field"] == "password"


@pytest.mark.parametrize("username", ["run\x07ner", "x" * 500, "\u202e"])
async def test_bad_username_after_registration_closed_is_still_403(api: AuthApi,
                                                                   username: str) -> None:
    assert (await api.register()).status == 201
    response = await api.register(username=username)
    assert response.status == 403
    assert (await response.json())["code"] == "registration_closed"


@pytest.mark.parametrize("username", ["run\x07ner", "x" * 500, "\u202e", ""])
async def test_login_with_an_impossible_username_is_the_generic_401(api: AuthApi,
                                                                    username: str) -> None:
    await api.register()
    response = await api.login(username=username)
    assert response.status == 401
    assert (await response.json())["code"] == "invalid_credentials"


async def test_passwords_may_hold_any_unicode_and_nul(api: AuthApi) -> None:
    password = "violet\x00harbor-тангенс-42-🏃"
    assert (await api.register(password=password)).status == 201
    assert (await api.login(password=password)).status == 200
    assert (await api.login(password="violet")).status == 401


async def test_password_change_body_over_64_kib_is_413(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": "x" * (65 * 1024)})
    assert response.status == 413


async def test_password_change_malformed_json_is_400(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, data=b"{",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["code"] == "malformed_json"


async def test_unknown_route_and_wrong_method_are_problem_documents(api: AuthApi) -> None:
    missing = await api.request("GET", "/auth/nothing-here")
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    wrong = await api.request("GET", "/auth/login")
    assert wrong.status == 405
    assert wrong.content_type == "application/problem+json"
