"""Gateway settings parsing, header filtering and the HTTPS redirect target."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from services.gateway.headers import downstream_response_headers, upstream_request_headers
from services.gateway.settings import load_settings
from services.gateway.tls import redirect_location
from shared.config import SettingsError
from tests.support import service_env, strong_secret


@pytest.fixture
def env() -> dict[str, str]:
    return service_env("postgresql://postgres@127.0.0.1:5432/x", jwt_key=strong_secret(),
                       internal_key=strong_secret())


def test_defaults(env: dict[str, str]) -> None:
    settings = load_settings(env)
    assert settings.common.port == 8080
    assert settings.upstreams.auth == "http://127.0.0.1:8081"
    assert settings.upstreams.media == "http://127.0.0.1:8082"
    assert settings.limits.json_bytes == 65_536
    assert settings.limits.media_bytes == 52_428_800 + 1_048_576
    assert settings.limits.import_bytes == 500_000_000 + 1_048_576
    assert settings.rate_limit.backend == "memory"
    assert settings.cors_origins == ()
    assert settings.trusted_networks == ()
    assert settings.revocation.grace_seconds == 30.0
    assert settings.limits.body_idle_timeout_seconds == 60.0
    assert not settings.tls.enabled
    assert settings.tls.redirect_port is None


def test_origins_are_normalised(env: dict[str, str]) -> None:
    settings = load_settings({**env, "CORS__AllowedOrigins":
                              "https://App.Example.org:443, http://localhost:5173/"})
    assert settings.cors_origins == ("https://app.example.org", "http://localhost:5173")


@pytest.mark.parametrize(("name", "value"), [
    ("CORS__AllowedOrigins", "*"),
    ("CORS__AllowedOrigins", "https://a.example/path"),
    ("CORS__AllowedOrigins", "https://user:pw@a.example"),
    ("Proxy__TrustedNetworks", "10.0.0.0/33"),
    ("Upstreams__Auth", "ftp://auth"),
    ("Upstreams__Media", "http://media:8082/prefix"),
    ("RateLimit__Backend", "memcached"),
    ("RateLimit__AuthPerMinute", "100000"),
    ("Redis__Url", "http://redis"),
    ("Revocation__GraceSeconds", "601"),
    ("Server__TlsKeyFile", "/nonexistent/key.pem"),
    ("Server__RedirectPort", "8080"),
    ("Gateway__StaticRoot", "/nonexistent/static"),
    ("Limits__JsonBodyBytes", "10"),
])
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], name: str,
                                                    value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**env, name: value})
    assert any(problem.startswith(name) or name in problem for problem in caught.value.problems)


def test_the_gateway_reads_the_cookie_name_auth_sets(env: dict[str, str]) -> None:
    assert load_settings(env).cookie_name == "__Host-authToken"
    plain = {**env, "App__Environment": "development", "Auth__CookieSecure": "false"}
    assert load_settings(plain).cookie_name == "authToken"
    with pytest.raises(SettingsError, match="Auth__CookieSecure"):
        load_settings({**env, "Auth__CookieSecure": "false"})


def test_request_headers_lose_hop_by_hop_credentials_and_internal_ones() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([
        ("Host", "tempo"), ("Connection", "close, X-Hop"), ("X-Hop", "1"), ("TE", "trailers"),
        ("Cookie", "authToken=t"), ("Authorization", "Bearer t"), ("X-Tempo-Identity", "f"),
        ("x-tempo-anything", "f"), ("X-Forwarded-For", "1.2.3.4"), ("X-Request-ID", "r"),
        ("Content-Length", "5"), ("Transfer-Encoding", "chunked"), ("Expect", "100-continue"),
        ("Accept", "application/json"), ("Range", "bytes=0-1"), ("User-Agent", "ua")]))
    assert sorted(upstream_request_headers(incoming)) == ["Accept", "Range", "User-Agent"]


def test_response_headers_lose_hop_by_hop_banner_and_cors() -> None:
    upstream = CIMultiDictProxy(CIMultiDict([
        ("Server", "Python/3.11 aiohttp"), ("Connection", "X-Gone"), ("X-Gone", "1"),
        ("Access-Control-Allow-Origin", "*"), ("X-Tempo-Debug", "1"),
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("ETag", '"x"'),
        ("Location", "/imports/42"),
        ("Content-Length", "3"), ("Transfer-Encoding", "chunked")]))
    kept = downstream_response_headers(upstream)
    assert kept.getall("Set-Cookie") == ["a=1", "b=2"]
    assert sorted(set(kept)) == ["ETag", "Location", "Set-Cookie"]
    assert kept["Location"] == "/api/imports/42"
    for location in ("imports/42", "https://elsewhere.example/x", "//evil.example/x"):
        relayed = downstream_response_headers(CIMultiDictProxy(CIMultiDict(Location=location)))
        assert relayed["Location"] == location


def test_redirect_without_a_usable_host_or_fallback_is_refused(env: dict[str, str]) -> None:
    tls = load_settings({**env, "Server__RedirectPort": "8081"}).tls
    assert tls.redirect_host is None
    assert redirect_location("bad host!", "/", tls) is None
    assert redirect_location("tempo.example", "/x", tls) == "https://tempo.example/x"


@pytest.mark.parametrize(("host", "path", "location"), [
    ("tempo.example", "/a?b=%2F", "https://tempo.example:8443/a?b=%2F"),
    ("tempo.example:80", "/", "https://tempo.example:8443/"),
    ("[::1]:80", "/x", "https://[::1]:8443/x"),
    ("evil.example/@x", "/", "https://fallback.example:8443/"),
    (None, "//evil.example/x", "https://fallback.example:8443/"),
    ("", "/", "https://fallback.example:8443/"),
    ("tempo.example", "http://other/x", "https://tempo.example:8443/"),
])
def test_redirect_location(env: dict[str, str], host: str | None, path: str,
                           location: str) -> None:
    tls = load_settings({**env, "Server__RedirectPort": "8081",
                         "Server__PublicHttpsPort": "8443",
                         "Server__RedirectHost": "fallback.example"}).tls
    assert redirect_location(host, path, tls) == location
