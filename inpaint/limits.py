"""How much image decoding runs at once: one budget of pixels shared by every request being prepared."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import RequestError

RETRY_AFTER_S = 2  # a preparation takes a second or two at the largest sizes


class Busy(RequestError):
    """The server is decoding as much as it may at once; the client should retry shortly (503)."""

    def __init__(self, pixels: int, capacity: int):
        super().__init__("server", f"the server is busy decoding other large images ({pixels / 1e6:.0f} MP asked, "
                                   f"{capacity / 1e6:.0f} MP at once); retry in {RETRY_AFTER_S} s", status=503)


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
                raise Busy(pixels, self.capacity)
            self._held += pixels
        try:
            yield
        finally:
            with self._room:
                self._held -= pixels
                self._room.notify_all()
