"""Who the client is: the peer address, or what a trusted proxy says it is.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the connection comes
from a network in ``Proxy__TrustedNetworks``; with none configured they are ignored.
Forwarded-for entries are read right to left, skipping trusted proxies: the first address
that is not a trusted proxy is the client, so a value a client prepended itself is never
the one chosen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from services.gateway.settings import Network

_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str
    scheme: str
    # The connection comes from a trusted proxy (its request id may be kept).
    via_trusted_proxy: bool

    @property
    def limit_key(self) -> str:
        return limit_key(self.ip)


_LIMIT_KEYS: dict[str, str] = {}


def limit_key(ip: str) -> str:
    """The rate-limit identity of an address: IPv6 clients are counted per /64, the block a
    single subscriber usually holds, so that rotating addresses inside it buys nothing."""
    if ":" not in ip:
        return ip
    key = _LIMIT_KEYS.get(ip)
    if key is not None:
        return key
    address = _parse(ip)
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        key = str(mapped) if mapped is not None else \
            str(ipaddress.IPv6Network((address, 64), strict=False))
    else:
        key = ip
    if len(_LIMIT_KEYS) >= _CACHE_LIMIT:
        _LIMIT_KEYS.clear()
    _LIMIT_KEYS[ip] = key
    return key


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1:value.index("]")]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class ClientResolver:
    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)
        self._peer_cache: dict[str, bool] = {}

    def trusted(self, address: str | None) -> bool:
        if not self._trusted or not address:
            return False
        known = self._peer_cache.get(address)
        if known is not None:
            return known
        parsed = _parse(address)
        result = parsed is not None and self._contains(parsed)
        if len(self._peer_cache) >= _CACHE_LIMIT:
            self._peer_cache.clear()
        self._peer_cache[address] = result
        return result

    def _contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        mapped = getattr(address, "ipv4_mapped", None)
        candidates = (address, mapped) if mapped is not None else (address,)
        return any(candidate in network for candidate in candidates
                   for network in self._trusted if candidate.version == network.version)

    def resolve(self, peer: str | None, forwarded_for: str | None,
                forwarded_proto: str | None, secure: bool) -> ClientInfo:
        scheme = "https" if secure else "http"
        peer_ip = peer or "unknown"
        if not self.trusted(peer):
            return ClientInfo(peer_ip, scheme, False)
        if forwarded_proto:
            proto = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
            if proto in {"http", "https"}:
                scheme = proto
        client = peer_ip
        if forwarded_for:
            for entry in reversed(forwarded_for.split(",")):
                address = _parse(entry)
                if address is None:
                    break
                client = str(address)
                if not self._contains(address):
                    break
        return ClientInfo(client, scheme, True)
