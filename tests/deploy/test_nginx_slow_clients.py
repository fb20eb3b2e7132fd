"""deploy/nginx/nginx.conf gives up on slow clients before the gateway would, and no
address can take more of the gateway than the gateway allows one client."""

from __future__ import annotations

import re

from services.gateway.settings import load_settings as load_gateway_settings
from tests.deploy.test_nginx_config import CONF, location
from tests.support import service_env, strong_secret

HTTP_LEVEL = CONF.split("server {")[0]
JSON_LOCATIONS = ("/api/auth/", "~ ^/api/auth/(login|register)$")
STREAM_LOCATIONS = ("/api/media", "/api/imports")


def gateway_defaults():
    return load_gateway_settings(service_env("postgresql://tempo@127.0.0.1/tempo",
                                             jwt_key=strong_secret(),
                                             internal_key=strong_secret()))


def seconds(directive: str, block: str) -> float:
    match = re.search(rf"\b{directive} (\d+)s;", block)
    assert match is not None, directive
    return float(match.group(1))


def size(directive: str, block: str) -> int:
    match = re.search(rf"\b{directive} (\d+)(k?);", block)
    assert match is not None, directive
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def test_json_bodies_are_read_whole_by_nginx_in_memory_before_the_gateway_sees_them():
    buffer = size("client_body_buffer_size", CONF)
    for prefix in JSON_LOCATIONS:
        block = location(prefix)
        assert "proxy_request_buffering on;" in block, prefix
        assert size("client_max_body_size", block) <= buffer, prefix


def test_nginx_waits_less_between_body_reads_than_the_gateway_would():
    limits = gateway_defaults().limits
    assert seconds("client_body_timeout", HTTP_LEVEL) <= limits.json_deadline_seconds
    for prefix in STREAM_LOCATIONS:
        assert seconds("client_body_timeout", location(prefix)) \
            < limits.body_idle_timeout_seconds, prefix
    assert "client_header_timeout" in HTTP_LEVEL
    assert "send_timeout" in HTTP_LEVEL


def test_requests_in_progress_per_address_stay_below_the_gateway_pool():
    upstreams = gateway_defaults().upstreams
    (per_address,) = re.findall(r"limit_conn tempo_conn_per_ip (\d+);", CONF)
    assert upstreams.in_flight_per_client <= int(per_address) < upstreams.pool_size
