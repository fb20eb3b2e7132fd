"""Results, reports and the statistics behind them: spreads, ratios, interleaved rounds."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Result:
    """One target: ``higher`` says whether a larger measurement is the better one."""

    name: str
    measured: float
    target: float
    higher: bool = True
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.higher else self.measured < self.target

    def line(self) -> str:
        verdict = "pass" if self.passed else "fail"
        return (f"RESULT {self.name} measured={_num(self.measured)} "
                f"target={_num(self.target)} {verdict}")


def _num(value: float) -> str:
    if value != value:  # NaN: the measurement could not be taken
        return "nan"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


@dataclass
class Report:
    """What one benchmark prints: a table of figures, then one RESULT line per target."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    header: tuple[str, ...] = ()
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        if not self.header:
            return ""
        lines = ["| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def render(self) -> str:
        parts = [f"## {self.title}", ""]
        if self.header:
            parts += [self.table(), ""]
        parts += [f"- {note}" for note in self.notes]
        if self.notes:
            parts.append("")
        parts += ["```", *(result.line() for result in self.results), "```"]
        return "\n".join(parts)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{_num(self.median)} ({_num(self.low)}–{_num(self.high)})"


def spread(values: Sequence[float]) -> Spread:
    clean = [v for v in values if v == v]
    if not clean:
        return Spread(float("nan"), float("nan"), float("nan"))
    return Spread(statistics.median(clean), min(clean), max(clean))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The per-round ratios of two interleaved series (round i against round i)."""
    return spread([a / b if b else float("nan") for a, b in zip(numerators, denominators,
                                                                  strict=True)])


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def interleave(variants: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Run every variant once per round, the order reversed every other round: A B C C B A
    A B C ...

    Alternating spreads the machine's slow moments over all variants instead of letting
    one of them take a whole noisy stretch; reversing keeps any one variant from always
    running first (or second, after a warm-up by the other) in every round.
    """
    measured: dict[str, list[Any]] = {name: [] for name in variants}
    forward = list(variants.items())
    for round_number in range(1, rounds + 1):
        order = forward if round_number % 2 else forward[::-1]
        for name, run in order:
            value = run()
            say(f"  round {round_number}/{rounds} {name}: {value}")
            measured[name].append(value)
    return measured
