"""What a metric is, how it is printed, and how timings are taken: interleaved rounds, medians of ratios."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

log = logging.getLogger("bench")


@dataclasses.dataclass(frozen=True)
class Metric:
    metric: str
    value: float | None
    goal: str  # "<= 1.05", ">= 0.97", "== 0" or "report"
    unit: str
    detail: str

    def holds(self) -> bool | None:
        """Whether the value meets the goal; None when there is nothing to meet (a report, or no value)."""
        if self.value is None or self.goal == "report":
            return None
        op, _, limit = self.goal.partition(" ")
        checks = {"<=": lambda v, x: v <= x, ">=": lambda v, x: v >= x, "==": lambda v, x: v == x}
        return checks[op](self.value, float(limit))

    def to_json(self) -> dict:
        return {"metric": self.metric, "value": self.value, "goal": self.goal, "unit": self.unit, "detail": self.detail}


def emit(metric: Metric, stream=None) -> None:
    """One JSON line per metric on stdout (given explicitly: metric code runs with stdout sent to stderr)."""
    print(json.dumps(metric.to_json()), file=stream or sys.__stdout__, flush=True)


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each variant over `rounds` rounds; each round runs every variant once.

    The order flips every round (A B, B A, ...) so neither variant always runs right after the other,
    and a slow drift of the machine's load hits both alike. Warm-up runs are not timed.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            gc.collect()  # a collection triggered by the previous run must not land in this one
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
            log.info("  round %d/%d %-8s %.3f s", index + 1, rounds, name, times[name][-1])
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of the ratio within each round: robust to load that changes between rounds."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def summary(times: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} median {statistics.median(ts):.3f} s (min {min(ts):.3f})" for name, ts in times.items())


def median_time(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
