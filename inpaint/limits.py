"""How much image decoding runs at once: one budget of pixels shared by every request being prepared."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import Busy

RETRY_AFTER_S = 2  # a preparation takes a second or two at the largest sizes


class PixelBudget:
    """Requests hold the pixels they are about to decode (read from the headers, before any decoding) until
    their inputs are stored. Decoding costs memory in proportion to pixels (a 40 MP input takes ~0.75 GB while
    it is checked, flattened and stored), so this bounds the memory of concurrent uploads whatever their count.
    """

    def __init__(self, capacity: int, *, wait_s: float = 2.0):
        self.capacity = capacity
        self.wait_s = wait_s
        self._held = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        pixels = min(max(0, int(pixels)), self.capacity)  # one request alone always fits
        with self._room:
            if not self._room.wait_for(lambda: self._held + pixels <= self.capacity, timeout=self.wait_s):
                raise Busy(pixels, self.capacity, RETRY_AFTER_S)
            self._held += pixels
        try:
            yield
        finally:
            with self._room:
                self._held -= pixels
                self._room.notify_all()
