"""Running the app with uvicorn: request headers and bodies bounded in time, a shutdown that ends in seconds,
one server per data folder."""

from __future__ import annotations

import sys

import uvicorn

from . import datalock, settings
from .errors import DataFolderBusy
from .web_security import KEEP_ALIVE_S, HeaderTimeoutProtocol

# Open connections get this long to finish once SIGTERM came. A studio tab keeps an event stream open that never
# ends by itself, and the jobs are told to stop at the signal itself (Server.handle_exit), so waiting longer
# only delays the shutdown that marks the running jobs interrupted.
GRACEFUL_SHUTDOWN_S = 3


def server_config(app, **options) -> uvicorn.Config:
    """uvicorn's settings for this app, the same wherever it is served."""
    return uvicorn.Config(app, http=HeaderTimeoutProtocol, timeout_keep_alive=KEEP_ALIVE_S,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **options)


class Server(uvicorn.Server):
    """uvicorn's server, which also tells the app's job queue to stop at the signal (SIGINT, SIGTERM): running
    jobs stop at their next step while the open connections drain, instead of after."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.jobs = getattr(getattr(config.app, "state", None), "jobs", None)  # the app's JobQueue

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self.jobs is not None:
            self.jobs.begin_stop()


def serve(app_factory, *, host: str = settings.HOST, port: int = settings.PORT) -> int:
    """Build the app and serve it until SIGINT/SIGTERM; a data folder in use by another server is refused."""
    try:
        datalock.acquire(settings.DATA_DIR)  # before anything is built on the folder, to say so plainly
    except DataFolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        Server(server_config(app_factory(), host=host, port=port)).run()
    finally:
        datalock.release(settings.DATA_DIR)
    return 0
