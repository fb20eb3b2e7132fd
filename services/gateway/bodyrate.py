"""The minimum rate a streamed request body must keep, over a sliding window.

The clock is the time spent waiting for the client's bytes, which the caller adds up: a
slow upstream that keeps the gateway from reading never counts against the client. The
window slides in quarter steps; at the end of each step the last full window must have
carried ``bytes_per_second × window_seconds`` bytes. A client may be slow for a moment
(a mobile network dropping out) as long as it catches up within the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

STEPS = 4


@dataclass(frozen=True, slots=True)
class MinRate:
    bytes_per_second: float
    window_seconds: float


class RateWindow:
    __slots__ = ("_marks", "_need", "_next", "_step")

    def __init__(self, rule: MinRate) -> None:
        self._step = rule.window_seconds / STEPS
        self._need = rule.bytes_per_second * rule.window_seconds
        # Bytes received at each step end, oldest first; the first is the window's start.
        self._marks: deque[int] = deque([0], maxlen=STEPS + 1)
        self._next = self._step

    @property
    def next_check(self) -> float:
        """The clock value of the next step end: the latest moment to call ``passes``."""
        return self._next

    def passes(self, clock: float, received: int) -> bool:
        """Record the step ends up to ``clock``, when ``received`` bytes had arrived; False
        when a full window carried fewer bytes than the rate asks."""
        marks = self._marks
        while clock >= self._next:
            marks.append(received)
            self._next += self._step
            if len(marks) > STEPS and received - marks[0] < self._need:
                return False
        return True
