"""TLS in the gateway, the HTTPS redirect listener, and refusing to start on bad settings."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import trustme
from yarl import URL

from services.gateway.app import create_app
from services.gateway.settings import load_settings
from services.gateway.tls import server_ssl_context
from tests.integration.gateway.gateway_helpers import ProductionServer
from tests.support import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    return ca, cert_file, key_file


async def test_gateway_serves_https_itself_with_hsts(
        env_for: Callable[..., dict[str, str]], tls_files: tuple[trustme.CA, Path, Path]
        ) -> None:
    ca, cert_file, key_file = tls_files
    settings = load_settings(env_for(**{"Server__TlsCertFile": str(cert_file),
                                        "Server__TlsKeyFile": str(key_file)}))
    context = server_ssl_context(settings.tls)
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with ProductionServer(create_app(settings), ssl_context=context) as server, \
            aiohttp.ClientSession() as http:
        response = await http.get(f"https://127.0.0.1:{server.port}/health", ssl=client_context)
        assert response.status == 200
        assert "max-age=63072000" in response.headers["Strict-Transport-Security"]


async def test_plain_http_listener_only_redirects_to_https_with_308(
        env_for: Callable[..., dict[str, str]], tls_files: tuple[trustme.CA, Path, Path]
        ) -> None:
    _ca, cert_file, key_file = tls_files
    redirect_port = free_port()
    settings = load_settings(env_for(**{
        "Server__TlsCertFile": str(cert_file), "Server__TlsKeyFile": str(key_file),
        "Server__RedirectPort": str(redirect_port), "Server__PublicHttpsPort": "8443"}))
    async with ProductionServer(create_app(settings)), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{redirect_port}"
        for method in ("GET", "POST", "DELETE"):
            response = await http.request(
                method, URL(f"{base}/api/media/x?limit=5&a=%2F", encoded=True),
                allow_redirects=False)
            assert response.status == 308
            assert response.headers["Location"] == \
                "https://127.0.0.1:8443/api/media/x?limit=5&a=%2F"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "Strict-Transport-Security" not in response.headers
        hostile = await http.get(f"{base}/", headers={"Host": "evil.example/@x"},
                                 allow_redirects=False)
        # No usable Host and no Server__RedirectHost: refused rather than sent anywhere.
        assert hostile.status == 400
        assert "Location" not in hostile.headers
        default_port = load_settings(env_for(**{"Server__RedirectPort": str(redirect_port)}))
        assert default_port.tls.public_https_port == 443


def run_gateway(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_bad_settings_refuse_to_start_with_every_problem_printed(
        base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env,
           "Proxy__TrustedNetworks": "10.0.0.0/8, not-a-network",
           "CORS__AllowedOrigins": "*, https://ok.example, ftp://bad.example, https://x.example/path",
           "Upstreams__Auth": "auth-without-scheme",
           "Upstreams__Media": "http://media:8082/some/path",
           "RateLimit__GlobalBurst": "0",
           "RateLimit__Backend": "memcached",
           "Redis__Url": "http://not-redis",
           "Revocation__GraceSeconds": "100000",
           "Server__TlsCertFile": str(tmp_path / "missing.pem"),
           "MediaStorage__MaxFileSizeBytes": "lots",
           "Server__RedirectPort": "70000"}
    result = run_gateway(env)
    assert result.returncode == 2
    for name in ("Proxy__TrustedNetworks", "CORS__AllowedOrigins", "Upstreams__Auth",
                 "Upstreams__Media", "RateLimit__GlobalBurst", "RateLimit__Backend",
                 "Redis__Url", "Revocation__GraceSeconds", "Server__TlsCertFile",
                 "MediaStorage__MaxFileSizeBytes", "Server__RedirectPort"):
        assert f"gateway: configuration error: {name}" in result.stderr, name
    assert "wildcard" in result.stderr
    assert base_env["JWT__SecretKey"] not in result.stderr + result.stdout


def test_wildcard_cors_origin_is_allowed_only_in_development(base_env: dict[str, str]) -> None:
    result = run_gateway({**base_env, "CORS__AllowedOrigins": "*"})
    assert result.returncode == 2
    assert "CORS__AllowedOrigins: a wildcard origin is refused in production" in result.stderr
    settings = load_settings({**base_env, "CORS__AllowedOrigins": "*",
                              "App__Environment": "development"})
    assert settings.cors_origins == ("*",)


def test_unloadable_certificate_refuses_to_start(base_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    result = run_gateway({**base_env, "Server__TlsCertFile": str(bogus),
                          "Server__TlsKeyFile": str(bogus)})
    assert result.returncode == 2
    assert "Server__TlsCertFile" in result.stderr
