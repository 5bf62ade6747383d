"""One process per data folder: an exclusive lock on a file in it, held while a server runs jobs or a command line
run stores in it (`generate --store`)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from .errors import DataFolderBusy

LOCK_NAME = "server.lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, holders in this process)
_guard = threading.Lock()


def acquire(folder: Path, holder: str = "inpaint server") -> None:
    """Lock `folder` for this process (re-entrant within it); DataFolderBusy names the holder otherwise. `holder`
    says what this process is, for the message another one gets.

    flock, not a pid file: the kernel releases it when the holder dies, even by SIGKILL, so a crashed
    server never blocks the next one.
    """
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            fd, holders = _held[folder]
            _held[folder] = (fd, holders + 1)
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 100, 0).decode(errors="replace").strip() or "inpaint process"
            os.close(fd)
            raise DataFolderBusy(f"another {other} is using the data folder {folder}; stop it, or give this one "
                                 "its own folder with INPAINT_DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})".encode(), 0)
        _held[folder] = (fd, 1)


def release(folder: Path) -> None:
    folder = Path(folder).resolve()
    with _guard:
        if folder not in _held:
            return
        fd, holders = _held[folder]
        if holders > 1:
            _held[folder] = (fd, holders - 1)
            return
        del _held[folder]
        os.close(fd)  # closing the descriptor releases the flock
