"""The gateway's settings: the common ones plus upstreams, limits, CORS, proxies, rate
limits, revocation and TLS. Every problem is collected; nothing is checked lazily."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import (
    PRODUCTION,
    CommonSettings,
    Env,
    JwtSettings,
    SettingsError,
    load_common,
    load_jwt,
)
from shared.cookies import auth_cookie_name, load_cookie_secure

SERVICE = "gateway"
DEFAULT_PORT = 8080
STATIC_ROOT = Path(__file__).resolve().parent / "static"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    auth: str
    media: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    pool_size: int
    # Connections of one upstream's pool one client may hold at once for requests with a
    # body or a streamed answer (the ones whose length the client can stretch).
    in_flight_per_client: int


@dataclass(frozen=True, slots=True)
class BodyLimits:
    json_bytes: int
    media_bytes: int
    import_bytes: int
    # Longest wait for the next piece of a request body before the upload is dropped.
    body_idle_timeout_seconds: float
    # A JSON body must have arrived whole this long after the request's head.
    json_deadline_seconds: float
    # A streamed body must carry this many bytes per second over each window (0: no rule).
    stream_min_bytes_per_second: float
    stream_rate_window_seconds: float
    streams_per_client: int


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    backend: str
    global_per_minute: float
    global_burst: int
    auth_per_minute: float
    auth_burst: int
    memory_max_clients: int
    redis_url: str
    redis_key_prefix: str
    redis_timeout_seconds: float
    redis_retry_seconds: float


@dataclass(frozen=True, slots=True)
class RevocationSettings:
    grace_seconds: float
    check_interval_seconds: float
    reconnect_delay_seconds: float


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path | None
    key_file: Path | None
    redirect_port: int | None
    # Where to send clients whose Host header is missing or unusable (else they get 400).
    redirect_host: str | None
    # The HTTPS port clients are sent to: the public one, which may differ from the
    # port this process listens on behind a port mapping.
    public_https_port: int

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    common: CommonSettings
    jwt: JwtSettings
    upstreams: UpstreamSettings
    limits: BodyLimits
    cors_origins: tuple[str, ...]
    trusted_networks: tuple[Network, ...]
    rate_limit: RateLimitSettings
    revocation: RevocationSettings
    tls: TlsSettings
    token_cache_size: int
    static_root: Path
    # The sign-in cookie auth sets, by the same setting and rule.
    cookie_name: str


def _origins(env: Env, name: str, environment: str) -> tuple[str, ...]:
    result = []
    for item in env.list(name):
        if item == "*":
            if environment == PRODUCTION:
                env.problem(name, "a wildcard origin is refused in production; list the origins")
            result.append(item)
            continue
        parts = urlsplit(item)
        if (parts.scheme not in {"http", "https"} or not parts.hostname
                or parts.path not in {"", "/"} or parts.query or parts.fragment
                or parts.username is not None or parts.password is not None):
            env.problem(name, "every entry must be an origin such as https://example.org")
            continue
        try:
            port = parts.port
        except ValueError:
            env.problem(name, "holds an origin with an invalid port")
            continue
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        default_port = 443 if parts.scheme == "https" else 80
        suffix = f":{port}" if port is not None and port != default_port else ""
        result.append(f"{parts.scheme}://{host}{suffix}")
    return tuple(result)


def _optional_file(env: Env, name: str) -> Path | None:
    value = env.str(name)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        env.problem(name, "names a file that does not exist")
        return None
    try:
        with path.open("rb"):
            pass
    except OSError:
        env.problem(name, "names a file that cannot be read")
        return None
    return path


def _tls(env: Env, port: int) -> TlsSettings:
    cert = _optional_file(env, "Server__TlsCertFile")
    key = _optional_file(env, "Server__TlsKeyFile")
    if (env.raw("Server__TlsCertFile") is None) != (env.raw("Server__TlsKeyFile") is None):
        env.problem("Server__TlsCertFile", "set both Server__TlsCertFile and Server__TlsKeyFile, "
                    "or neither")
    redirect_port = env.int("Server__RedirectPort", 0, minimum=0, maximum=65535) or None
    if redirect_port is not None and redirect_port == port:
        env.problem("Server__RedirectPort", "must differ from Server__Port")
    public_https_port = env.int("Server__PublicHttpsPort", port if cert else 443,
                                minimum=1, maximum=65535)
    return TlsSettings(cert_file=cert if key else None, key_file=key if cert else None,
                       redirect_port=redirect_port,
                       redirect_host=env.str("Server__RedirectHost"),
                       public_https_port=public_https_port)


def load_settings(environ: Mapping[str, str] | None = None) -> GatewaySettings:
    env = Env(environ)
    common = load_common(env, SERVICE, DEFAULT_PORT)
    jwt = load_jwt(env, common)

    upstreams = UpstreamSettings(
        auth=env.url("Upstreams__Auth", "http://127.0.0.1:8081"),
        media=env.url("Upstreams__Media", "http://127.0.0.1:8082"),
        connect_timeout_seconds=env.float("Upstreams__ConnectTimeoutSeconds", 5.0,
                                          minimum=0.1),
        read_timeout_seconds=env.float("Upstreams__ReadTimeoutSeconds", 120.0, minimum=0.1),
        pool_size=env.int("Upstreams__PoolSize", 100, minimum=1, maximum=10_000),
        in_flight_per_client=env.int("Upstreams__InFlightPerClient", 16, minimum=1,
                                     maximum=10_000),
    )
    if upstreams.in_flight_per_client > upstreams.pool_size:
        env.problem("Upstreams__InFlightPerClient", "must not exceed Upstreams__PoolSize")
    for name, url in (("Upstreams__Auth", upstreams.auth), ("Upstreams__Media", upstreams.media)):
        parts = urlsplit(url)
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            env.problem(name, "must be a base URL without a path, query or fragment")

    overhead = env.int("Limits__MultipartOverheadBytes", 1_048_576, minimum=0,
                       maximum=1_073_741_824)
    limits = BodyLimits(
        json_bytes=env.int("Limits__JsonBodyBytes", 65_536, minimum=1_024,
                           maximum=16_777_216),
        media_bytes=env.int("MediaStorage__MaxFileSizeBytes", 52_428_800, minimum=1) + overhead,
        import_bytes=env.int("Import__MaxFileSizeBytes", 500_000_000, minimum=1) + overhead,
        body_idle_timeout_seconds=env.float("Limits__BodyIdleTimeoutSeconds", 60.0,
                                            minimum=0.05),
        json_deadline_seconds=env.float("Limits__JsonBodyDeadlineSeconds", 10.0,
                                        minimum=0.05),
        stream_min_bytes_per_second=env.float("Limits__StreamMinBytesPerSecond", 1024.0,
                                              minimum=0.0),
        stream_rate_window_seconds=env.float("Limits__StreamRateWindowSeconds", 30.0,
                                             minimum=0.05),
        streams_per_client=env.int("Limits__StreamsPerClient", 4, minimum=1,
                                   maximum=10_000),
    )

    backend = env.choice("RateLimit__Backend", "memory", ("memory", "redis"))
    redis_url = env.url("Redis__Url", "redis://127.0.0.1:6379/0",
                        schemes=("redis", "rediss"))
    rate_limit = RateLimitSettings(
        backend=backend,
        global_per_minute=env.float("RateLimit__GlobalPerMinute", 1200.0, minimum=1.0),
        global_burst=env.int("RateLimit__GlobalBurst", 200, minimum=1, maximum=1_000_000),
        auth_per_minute=env.float("RateLimit__AuthPerMinute", 5.0, minimum=0.01),
        auth_burst=env.int("RateLimit__AuthBurst", 5, minimum=1, maximum=10_000),
        memory_max_clients=env.int("RateLimit__MemoryMaxClients", 100_000, minimum=100),
        redis_url=redis_url,
        redis_key_prefix=env.str("RateLimit__RedisKeyPrefix", "tempo:ratelimit:")
        or "tempo:ratelimit:",
        redis_timeout_seconds=env.float("Redis__TimeoutSeconds", 0.5, minimum=0.01),
        redis_retry_seconds=env.float("RateLimit__RedisRetrySeconds", 2.0, minimum=0.05),
    )
    if rate_limit.auth_per_minute > rate_limit.global_per_minute:
        env.problem("RateLimit__AuthPerMinute", "must not exceed RateLimit__GlobalPerMinute")

    revocation = RevocationSettings(
        grace_seconds=env.float("Revocation__GraceSeconds", 30.0, minimum=0.0),
        check_interval_seconds=env.float("Revocation__CheckIntervalSeconds", 5.0, minimum=0.05),
        reconnect_delay_seconds=env.float("Revocation__ReconnectDelaySeconds", 1.0,
                                          minimum=0.05),
    )
    if revocation.grace_seconds > 600:
        env.problem("Revocation__GraceSeconds", "must be at most 600 (a longer window keeps "
                    "revoked tokens usable while the database is unreachable)")

    static_root = Path(env.str("Gateway__StaticRoot", str(STATIC_ROOT)) or STATIC_ROOT)
    if not static_root.is_dir():
        env.problem("Gateway__StaticRoot", "must be an existing directory")

    settings = GatewaySettings(
        common=common,
        jwt=jwt,
        upstreams=upstreams,
        limits=limits,
        cors_origins=_origins(env, "CORS__AllowedOrigins", common.environment),
        trusted_networks=env.networks("Proxy__TrustedNetworks"),
        rate_limit=rate_limit,
        revocation=revocation,
        tls=_tls(env, common.port),
        token_cache_size=env.int("Gateway__TokenCacheSize", 10_000, minimum=1,
                                 maximum=10_000_000),
        static_root=static_root.resolve(),
        cookie_name=auth_cookie_name(load_cookie_secure(env, common.environment)),
    )
    if env.problems:
        raise SettingsError(env.problems)
    return settings
