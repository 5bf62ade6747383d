"""Daemon threads kept between tasks, for the generation flow.

A generation runs on a thread of its own (Engine.run yields what it reports). A fresh thread per run costs the
model's first calls on it: torch's OpenMP team and the math libraries' per-thread state are set up again for
each new calling thread. Measured on a 2-core CPU, one SD 1.5-layout pipeline call at 256 px took 1.16-1.25x as
long on a new thread as on the thread that made the previous calls, and 1.01x on a kept one (bench
`engine_overhead` holds the engine to that raw call). So threads are kept once their task ends and take the next.

Not `concurrent.futures.ThreadPoolExecutor`: its threads are joined at the interpreter's exit, and a generation
inside a call that cannot be interrupted (PatchMatch on a large hole) must not hold up a stopping server. These
are daemon threads, as the per-run threads were. There is no cap: a task never waits for a thread, so a quick
request is not queued behind a long one; the number kept is the most that ever ran at once.

A forked process (ZeroGPU runs its GPU function in one) has none of its parent's threads but the one that forked:
it starts with none kept, or a task would wait forever for a thread that is not there.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable


class KeptThreads:
    def __init__(self, name: str):
        self.name = name
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of the threads waiting for a task, the latest last
        self._started = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_threads)

    def _forget_threads(self) -> None:
        self._idle, self._lock = [], threading.Lock()  # the lock too: another thread may have held it at the fork

    def start(self, task: Callable[[], None]) -> threading.Event:
        """Runs `task` on the thread that was freed last (its per-thread state is the warmest), or on a new one
        when none is idle; the event returned is set once the task has ended and its thread is free for the next.
        `task` must not raise: what it raises is lost with nobody to tell."""
        ended = threading.Event()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                inbox = queue.SimpleQueue()
                self._started += 1
                threading.Thread(target=self._serve, args=(inbox,), name=f"{self.name}-{self._started}",
                                 daemon=True).start()
        inbox.put((task, ended))
        return ended

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            task, ended = inbox.get()
            task()
            with self._lock:
                self._idle.append(inbox)
            ended.set()  # after it is idle again: a caller that waited for it and starts again reuses it
