"""deploy/nginx/nginx.conf: accepted by nginx, and the rules it must keep."""

from __future__ import annotations

import re

import pytest

from deploy.nginx_local import PRODUCTION_CONF, LocalNginx, NginxProcess, find_nginx
from services.gateway.settings import load_settings as load_gateway_settings
from tests.support import CI, service_env, strong_secret

CONF = PRODUCTION_CONF.read_text()
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
GATEWAY_HEADERS = ("X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
                   "Referrer-Policy", "Content-Security-Policy", "Cross-Origin-Opener-Policy",
                   "Cross-Origin-Resource-Policy", "Permissions-Policy")


def location(prefix: str) -> str:
    """A location block of the HTTPS server."""
    https_server = CONF.split("listen 8443 ssl;")[1]
    match = re.search(rf"location {re.escape(prefix)} \{{(.*?)\n        \}}", https_server,
                      re.DOTALL)
    assert match is not None, prefix
    return match.group(1)


def test_nginx_accepts_the_configuration(tmp_path, tls_files):
    nginx = find_nginx()
    if nginx is None:
        message = "nginx is not installed (make system-deps)"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cert, key = tls_files
    NginxProcess(LocalNginx(tmp_path, "127.0.0.1:9", cert, key, 1, 2), nginx=nginx).test()


def test_only_tls_1_2_and_1_3_with_the_mozilla_intermediate_ciphers():
    assert re.findall(r"ssl_protocols ([^;]+);", CONF) == ["TLSv1.2 TLSv1.3"]
    assert re.findall(r"ssl_ciphers ([^;]+);", CONF) == [MOZILLA_INTERMEDIATE]
    assert "ssl_session_tickets off;" in CONF


def test_plain_http_redirects_everything_but_acme_challenges_to_https():
    http_server = CONF.split("listen 8443 ssl;")[0]
    assert "return 301 https://$host$request_uri;" in http_server
    assert "/.well-known/acme-challenge/" in http_server


def test_server_version_is_hidden():
    assert "server_tokens off;" in CONF


def test_hsts_is_sent_by_nginx_once():
    assert "proxy_hide_header Strict-Transport-Security;" in CONF
    assert re.search(r'add_header Strict-Transport-Security "max-age=(\d+); includeSubDomains"'
                     r" always;", CONF)
    max_age = int(re.search(r"max-age=(\d+)", CONF).group(1))
    assert max_age >= 31536000


def test_gateway_security_headers_are_added_only_to_nginx_own_error_pages():
    outside_errors = CONF.split("location = /.nginx-error.json")[0]
    for header in GATEWAY_HEADERS:
        assert f"add_header {header}" not in outside_errors, header
        assert f"add_header {header}" in location("= /.nginx-error.json"), header


def test_uploads_stream_without_request_buffering():
    assert "proxy_request_buffering off;" in CONF
    assert "proxy_http_version 1.1;" in CONF


def test_forwarded_headers_are_set_by_nginx_and_not_appended():
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in CONF
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in CONF
    assert "$proxy_add_x_forwarded_for" not in CONF


def test_a_coarse_request_limit_sits_in_front_of_the_gateway():
    assert "limit_req_zone" in CONF
    for prefix in ("/", "/api/auth/", "/api/media", "/api/imports"):
        assert "limit_req zone=" in location(prefix), prefix
    assert "limit_req zone=tempo_auth_per_ip" in location("~ ^/api/auth/(login|register)$")


def body_limit(prefix: str) -> int:
    return int(re.search(r"client_max_body_size (\d+);", location(prefix)).group(1))


def test_body_limits_per_path_match_the_gateway_defaults(tmp_path):
    env = service_env("postgresql://tempo@127.0.0.1/tempo", jwt_key=strong_secret(),
                      internal_key=strong_secret())
    limits = load_gateway_settings(env).limits
    assert body_limit("/api/auth/") == limits.json_bytes
    assert body_limit("~ ^/api/auth/(login|register)$") == limits.json_bytes
    assert body_limit("/api/media") == limits.media_bytes
    assert body_limit("/api/imports") == limits.import_bytes


def test_nginx_error_pages_carry_the_same_header_values_as_the_gateway():
    from services.gateway import headers

    block = location("= /.nginx-error.json")
    expected = {
        "Content-Security-Policy": headers.CONTENT_SECURITY_POLICY,
        "Permissions-Policy": headers.PERMISSIONS_POLICY,
        "Strict-Transport-Security": headers.HSTS,
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    for name, value in expected.items():
        assert f'add_header {name} "{value}" always;' in block, name
