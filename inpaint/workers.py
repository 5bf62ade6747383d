"""Who runs the generations: one local worker per device (INPAINT_DEVICES), or Ray actors across a cluster
(INPAINT_RAY_ADDRESS; inpaint.ray_workers). The job queue gives each worker one job at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from . import settings

if TYPE_CHECKING:
    from .assets import AssetStore
    from .events import Event
    from .generate import Engine
    from .schema import ResolvedRequest


class Worker(Protocol):
    """What the job queue asks of a worker; an Engine is one (the worker of its device)."""

    store: AssetStore  # where results and previews are stored: the API node's store, wherever the run happens

    def run(self, request: ResolvedRequest, cancel: threading.Event | None = None, *,
            job_id: str | None = None) -> Iterator[Event]: ...


def local_workers(engine: Engine, devices: tuple[str, ...] = settings.DEVICES) -> list[Engine]:
    """One worker per entry of `devices`: `engine` runs on the first, a twin sharing its store on each
    other (its own pipeline cache: every model is loaded once per device that runs it)."""
    return [engine, *(engine.on_device(device) for device in devices[1:])]


def start_workers(engine: Engine) -> list[Worker]:
    """The workers the settings ask for: Ray actors when INPAINT_RAY_ADDRESS is set, else one per device."""
    if settings.RAY_ADDRESS:
        try:
            from .ray_workers import connect  # ray is an optional install
        except ImportError as exc:
            raise SystemExit(f"INPAINT_RAY_ADDRESS is set but {exc.name} cannot be imported: "
                             "pip install ray==2.60.0") from None
        return connect(engine, settings.RAY_ADDRESS)
    return local_workers(engine)
