"""deploy/nginx/nginx.conf: accepted by nginx, and the rules it must keep."""

from __future__ import annotations

import datetime
import json
import re

import pytest
import trustme

from deploy.nginx_local import (
    ERROR_PAGE_CONF,
    PRODUCTION_CONF,
    PUBLIC_NAME_LINE,
    LocalNginx,
    NginxProcess,
    find_nginx,
)
from deploy.stack import free_port
from services.gateway.settings import load_settings as load_gateway_settings
from shared import runner
from tests.support import CI, service_env, strong_secret

CONF = PRODUCTION_CONF.read_text()
ERROR_PAGE = ERROR_PAGE_CONF.read_text()
ERROR_BODY = (ERROR_PAGE_CONF.parent / ".nginx-error.json").read_text()
MOZILLA_INTERMEDIATE_CURVES = "X25519:prime256v1:secp384r1"
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
GATEWAY_HEADERS = ("X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
                   "Referrer-Policy", "Content-Security-Policy", "Cross-Origin-Opener-Policy",
                   "Cross-Origin-Resource-Policy", "Permissions-Policy")


def location(prefix: str) -> str:
    """A location block of the HTTPS server for the public name."""
    https_server = CONF.split("listen 8443 ssl;")[1]
    match = re.search(rf"location {re.escape(prefix)} \{{(.*?)\n        \}}", https_server,
                      re.DOTALL)
    assert match is not None, prefix
    return match.group(1)


def error_location() -> str:
    match = re.search(r"location = /\.nginx-error\.json \{(.*?)\n\}", ERROR_PAGE, re.DOTALL)
    assert match is not None
    return match.group(1)


def servers() -> list[str]:
    """Each server block's text, up to the next one."""
    return CONF.split("    server {\n")[1:]


def test_nginx_accepts_the_configuration(tmp_path, tls_files):
    nginx = require_nginx()
    cert, key = tls_files
    NginxProcess(LocalNginx(tmp_path, "127.0.0.1:9", cert, key, 1, 2), nginx=nginx).test()


def test_only_tls_1_2_and_1_3_with_the_mozilla_intermediate_ciphers():
    assert re.findall(r"ssl_protocols ([^;]+);", CONF) == ["TLSv1.2 TLSv1.3"]
    assert re.findall(r"ssl_ciphers ([^;]+);", CONF) == [MOZILLA_INTERMEDIATE]
    assert "ssl_session_tickets off;" in CONF


def test_only_the_mozilla_intermediate_curves_are_offered():
    # OpenSSL's default list adds X448 and secp521r1, which the profile leaves out.
    assert re.findall(r"ssl_ecdh_curve ([^;]+);", CONF) == [MOZILLA_INTERMEDIATE_CURVES]
    # Set once for every server: the default server settles the handshake's parameters.
    http_level = CONF.split("    server {\n")[0]
    for directive in ("ssl_protocols", "ssl_ciphers", "ssl_ecdh_curve"):
        assert directive in http_level, directive


def test_plain_http_redirects_everything_but_acme_challenges_to_https():
    http_server = CONF.split("listen 8443 ssl;")[0].split("listen 8080;")[1]
    assert "return 301 https://$server_name$request_uri;" in http_server
    assert "/.well-known/acme-challenge/" in http_server


def test_redirects_are_built_from_the_configured_name_never_the_requests_host():
    for line in re.findall(r"(?:return 30\d|rewrite) [^;]+;", CONF):
        assert "$host" not in line, line
        assert "$http_host" not in line, line


def test_the_public_name_is_the_same_in_both_servers_that_answer():
    named = [server for server in servers() if PUBLIC_NAME_LINE in server]
    assert len(named) == 2
    assert {re.search(r"listen (\d+)", server).group(1) for server in named} == {"8080", "8443"}
    assert CONF.count("server_name ") == 4


def test_unknown_names_meet_default_servers_that_close_the_connection():
    defaults = [server for server in servers() if " default_server;" in server]
    assert {re.search(r"listen (\d+)", server).group(1) for server in defaults} == {
        "8080", "8443"}
    for server in defaults:
        assert "return 444;" in server
        assert "proxy_pass" not in server
    https_default = next(server for server in defaults if "listen 8443" in server)
    assert "ssl_reject_handshake on;" in https_default
    assert "ssl_certificate" not in https_default


def test_server_version_is_hidden():
    assert "server_tokens off;" in CONF


def test_hsts_is_sent_by_nginx_once():
    assert "proxy_hide_header Strict-Transport-Security;" in CONF
    assert re.search(r'add_header Strict-Transport-Security "max-age=(\d+); includeSubDomains"'
                     r" always;", CONF)
    max_age = int(re.search(r"max-age=(\d+)", CONF).group(1))
    assert max_age >= 31536000


def test_gateway_security_headers_are_added_only_to_nginx_own_error_pages():
    for header in GATEWAY_HEADERS:
        assert f"add_header {header}" not in CONF, header
        assert f"add_header {header}" in error_location(), header


def test_every_server_answers_its_own_errors_with_the_error_page():
    for server in servers():
        assert "include /etc/nginx/errors/error-page.conf;" in server
    codes = {int(code) for line in re.findall(r"error_page ([^;]+);", ERROR_PAGE)
             for code in re.findall(r"\b(\d{3})\b", line.split("=")[0])}
    assert {400, 405, 413, 414, 494, 501, 502, 504} <= codes
    assert "error_page 494 =400 /.nginx-error.json;" in ERROR_PAGE


def test_the_error_body_is_generic_and_names_no_software():
    body = json.loads(ERROR_BODY)
    assert body["type"] == "about:blank"
    assert "nginx" not in ERROR_BODY.lower()


def test_nginx_refuses_header_lines_before_the_gateways_parser_would():
    (size,) = re.findall(r"large_client_header_buffers \d+ (\d+)k;", CONF)
    buffer = int(size) * 1024
    # A request line is "METHOD target HTTP/1.1\r\n"; a header line "name: value\r\n".
    assert buffer - len("GET  HTTP/1.1\r\n") <= runner.MAX_LINE_BYTES
    assert buffer - len(": \r\n") <= runner.MAX_FIELD_BYTES


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

    block = error_location()
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


def require_nginx() -> str:
    nginx = find_nginx()
    if nginx is None:
        message = "nginx is not installed (make system-deps)"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return nginx


# sslyze's own trust store holds a certificate that cryptography warns about.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_tls_is_compliant_with_mozilla_intermediate_as_sslyze_checks_it(tmp_path):
    import sslyze
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    nginx = require_nginx()
    ca = trustme.CA()
    # A lifespan the profile accepts (at most 366 days), so only the test CA's own
    # finding remains: no public trust store knows it.
    now = datetime.datetime.now(datetime.UTC)
    cert = ca.issue_cert("localhost", not_before=now - datetime.timedelta(days=1),
                         not_after=now + datetime.timedelta(days=90))
    cert_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_file))
    http_port, https_port = free_port(), free_port()
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    with NginxProcess(LocalNginx(workdir, "127.0.0.1:9", cert_file, key_file, http_port,
                                 https_port), nginx=nginx):
        scanner = sslyze.Scanner()
        scanner.queue_scans([sslyze.ServerScanRequest(
            server_location=sslyze.ServerNetworkLocation("localhost", https_port,
                                                         ip_address="127.0.0.1"))])
        (result,) = scanner.get_results()
    assert result.connectivity_status == sslyze.ServerConnectivityStatusEnum.COMPLETED, \
        result.connectivity_error_trace
    issues: dict[str, str] = {}
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as not_compliant:
        issues = not_compliant.issues
    issues.pop("certificate_path_validation", None)
    assert issues == {}
