"""Running the app with uvicorn: request headers and shutdown bounded in time, one server per data folder."""

from __future__ import annotations

import sys

import uvicorn

from . import datalock, settings
from .web_security import KEEP_ALIVE_S, HeaderTimeoutProtocol

# A studio tab keeps an event stream open that never ends by itself: without a bound, SIGTERM would wait on
# it forever and the shutdown that marks running jobs interrupted would never run.
GRACEFUL_SHUTDOWN_S = 10


def server_config(app, **options) -> uvicorn.Config:
    """uvicorn's settings for this app, the same wherever it is served."""
    return uvicorn.Config(app, http=HeaderTimeoutProtocol, timeout_keep_alive=KEEP_ALIVE_S,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **options)


def serve(app_factory, *, host: str = settings.HOST, port: int = settings.PORT) -> int:
    """Build the app and serve it until SIGINT/SIGTERM; a data folder in use by another server is refused."""
    try:
        datalock.acquire(settings.DATA_DIR)  # before anything is built on the folder, to say so plainly
    except datalock.DataFolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        uvicorn.Server(server_config(app_factory(), host=host, port=port)).run()
    finally:
        datalock.release(settings.DATA_DIR)
    return 0
