"""Time limits in tests that a shared machine cannot trip by itself."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """What `action` returned, and the seconds it took."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def best_of_two(timed_try: Callable[[], tuple[T, float]], limit_s: float) -> tuple[T, float]:
    """`timed_try()` (what a try got, its seconds), made once more when it took `limit_s` or longer: the quicker
    counts. A stall of the machine (other work, a collection of the test session's whole heap) slows one try;
    work the code really does slows both."""
    first = timed_try()
    if first[1] < limit_s:
        return first
    return min(first, timed_try(), key=lambda tried: tried[1])
