"""How many of a bounded resource each client holds at once.

A client is the rate limiter's identity (``ClientInfo.limit_key``). Only clients holding
something have an entry, so the table is bounded by the requests in flight.
"""

from __future__ import annotations


class ClientSlots:
    __slots__ = ("_held", "per_client")

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._held: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        held = self._held.get(client, 0)
        if held >= self.per_client:
            return False
        self._held[client] = held + 1
        return True

    def release(self, client: str) -> None:
        held = self._held.get(client, 0) - 1
        if held > 0:
            self._held[client] = held
        else:
            self._held.pop(client, None)

    def held(self, client: str) -> int:
        return self._held.get(client, 0)
