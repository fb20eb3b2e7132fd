"""Client address from trusted proxies only; the origin check."""

from __future__ import annotations

import ipaddress

import pytest

from services.gateway.clientip import ClientResolver, limit_key
from services.gateway.csrf import OriginPolicy, origin_of

PROXIES = ClientResolver([ipaddress.ip_network("10.0.0.0/8"),
                          ipaddress.ip_network("fd00::/8")])
NOBODY = ClientResolver([])


def test_forwarded_headers_are_ignored_without_trusted_networks() -> None:
    info = NOBODY.resolve("10.1.1.1", "198.51.100.7", "https", secure=False)
    assert (info.ip, info.scheme, info.via_trusted_proxy) == ("10.1.1.1", "http", False)


def test_forwarded_headers_from_an_untrusted_peer_change_nothing() -> None:
    info = PROXIES.resolve("203.0.113.5", "198.51.100.7", "https", secure=False)
    assert (info.ip, info.scheme) == ("203.0.113.5", "http")


def test_trusted_proxy_forwarded_for_is_read_right_to_left() -> None:
    # The client prepended a fake address; the proxy appended the real one.
    info = PROXIES.resolve("10.0.0.2", "1.2.3.4, 198.51.100.7", "https", secure=False)
    assert (info.ip, info.scheme, info.via_trusted_proxy) == ("198.51.100.7", "https", True)
    chained = PROXIES.resolve("10.0.0.2", "198.51.100.7, 10.0.0.9", "http", secure=True)
    assert chained.ip == "198.51.100.7"
    assert chained.scheme == "http"


def test_malformed_forwarded_entries_stop_the_walk() -> None:
    info = PROXIES.resolve("10.0.0.2", "198.51.100.7, garbage", None, secure=False)
    assert info.ip == "10.0.0.2"
    assert PROXIES.resolve("10.0.0.2", "", "gopher", secure=True).scheme == "https"


def test_ipv6_and_ipv4_mapped_peers() -> None:
    assert PROXIES.trusted("fd00::1")
    assert PROXIES.trusted("::ffff:10.0.0.3")
    assert not PROXIES.trusted("2001:db8::1")
    assert not PROXIES.trusted(None)
    assert not PROXIES.trusted("not-an-ip")
    assert PROXIES.resolve("fd00::1", "[2001:db8::5]", None, secure=False).ip == "2001:db8::5"


@pytest.mark.parametrize(("url", "origin"), [
    ("https://Example.org", "https://example.org"),
    ("https://example.org:443/path?q", "https://example.org"),
    ("http://example.org:8080", "http://example.org:8080"),
    ("http://[::1]:8080/x", "http://[::1]:8080"),
    ("javascript:alert(1)", None),
    ("https://", None),
    ("http://example.org:99999", None),
])
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://app.example.org"])
    own = OriginPolicy.own_origin("https", "tempo.example:443")
    assert own == "https://tempo.example"
    assert policy.allows(origin="https://tempo.example", referer=None, own_origin=own)
    assert policy.allows(origin="https://app.example.org", referer=None, own_origin=own)
    assert not policy.allows(origin="https://evil.example", referer=None, own_origin=own)
    assert not policy.allows(origin="null", referer="https://tempo.example/", own_origin=own)
    assert policy.allows(origin=None, referer="https://tempo.example/x", own_origin=own)
    assert not policy.allows(origin=None, referer=None, own_origin=own)
    assert not policy.allows(origin="http://tempo.example", referer=None, own_origin=own)
    assert not policy.allows(origin="https://tempo.example.evil.net", referer=None,
                             own_origin=own)
    assert OriginPolicy(["*"]).allows(origin="https://any.example", referer=None,
                                      own_origin=own)


@pytest.mark.parametrize(("ip", "key"), [
    ("198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("unknown", "unknown"),
])
def test_rate_limit_key_groups_ipv6_by_64(ip: str, key: str) -> None:
    assert limit_key(ip) == key
