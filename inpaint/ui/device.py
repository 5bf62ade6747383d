"""Where a run happens: the server's job queue, or the engine in a worker thread, streamed as events; on ZeroGPU, in
the GPU process."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from .. import zerogpu
from ..errors import JobCanceled, RequestError
from ..events import (
    Failed,
    Loading,
    Preview,
    Progress,
    Regions,
    Result,
    Waiting,
    Warned,
)
from ..generate import Engine
from ..pipelines import ModelUnavailable
from ..previews import side_by_side
from ..schema import ResolvedRequest

if TYPE_CHECKING:
    from ..jobs import JobQueue

try:  # ZeroGPU on Hugging Face Spaces; elsewhere spaces.GPU hands the function back unchanged
    import spaces
except ImportError:
    spaces = None

PREVIEW_HEIGHT_PX = 192  # latent previews are 1/8 of the generation size: enlarged to stay readable
PREVIEW_GAP_PX = 4
WEBP_MAX_SIDE = 16383  # libwebp refuses a larger side, and previews are saved as WebP


def on_gpu(fn, *, duration=None):
    """`fn` as a ZeroGPU function asking for `duration` (seconds, or a callable of fn's arguments)."""
    return fn if spaces is None else spaces.GPU(fn, duration=duration)


def preview_strip(previews: list[Image.Image]) -> Image.Image:
    """The previews of one micro-batch side by side, enlarged so a latent-sized preview can be read,
    and never past the side WebP can store (a wide generation's previews stay as wide as they fit)."""
    gaps = PREVIEW_GAP_PX * (len(previews) - 1)
    scale = max(1, min(PREVIEW_HEIGHT_PX // max(im.height for im in previews),
                       (WEBP_MAX_SIDE - gaps) // sum(im.width for im in previews)))
    strip = side_by_side([im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
                          for im in previews], gap=PREVIEW_GAP_PX)
    if max(strip.size) > WEBP_MAX_SIDE:  # too wide even at latent size (a big batch of wide previews): shrunk
        strip.thumbnail((WEBP_MAX_SIDE, WEBP_MAX_SIDE), Image.Resampling.BOX)
    return strip


def stream_generation(runner: Engine | JobQueue, request: ResolvedRequest, *, cancel: threading.Event,
                      preview_dir: Path) -> Iterator[tuple[str, object]]:
    """`runner.run`'s events (the engine's, or the job queue's) for one prepared request, as the studio shows
    them: ("waiting", None), ("loading", model id), ("regions", regions), ("preview", (path, step, steps)),
    ("progress", fraction), ("warning", message), ("seam", (asset id, report)) then ("result", asset) per
    sample. Ends after the last result; raises what ended the run otherwise (JobCanceled when `cancel` was set).
    Closing the iterator early cancels the generation."""
    run_id = f"{time.time_ns():x}"
    batch = {"index": 0, "last_step": 0}
    events = runner.run(request, cancel)
    try:
        for event in events:
            if isinstance(event, Waiting):
                yield "waiting", None
            elif isinstance(event, Loading):
                yield "loading", event.model_id
            elif isinstance(event, Regions):
                yield "regions", event.regions
            elif isinstance(event, Preview):
                if event.step <= batch["last_step"]:
                    batch["index"] += 1  # the steps start over: the next micro-batch
                batch["last_step"] = event.step
                # Saved once, then only its path travels: a Gallery re-encodes every image on every yield.
                path = preview_dir / f"preview-{run_id}-{batch['index']:03d}-{event.step:03d}.webp"
                preview_strip(list(event.images)).save(path, quality=80)
                yield "preview", (str(path), event.step, event.steps)
            elif isinstance(event, Progress):
                yield "progress", event.fraction
            elif isinstance(event, Warned):
                yield "warning", event.message
            elif isinstance(event, Result):
                if event.seam_report:
                    yield "seam", (event.asset.id, event.seam_report)
                yield "result", event.asset
            elif isinstance(event, Failed):
                raise failed_error(event, request)
    finally:
        events.close()  # early: stops the generation within a step, and returns once it let go of the device


def failed_error(event: Failed, request: ResolvedRequest) -> Exception:
    """The error a Failed event stands for, as the class the studio (and ZeroGPU's caller) tells apart."""
    if event.kind == "canceled":
        return JobCanceled()
    if event.kind == "bad-input":
        prefix = f"{event.field}: "
        message = event.message.removeprefix(prefix)
        return RequestError(event.field or "request", message, status=event.status)
    if event.kind == "unavailable":
        error = ModelUnavailable(request.pipeline_model_id, "")
        error.args = (event.message,)  # its message as the engine worded it
        return error
    return RuntimeError(event.message)


# ZeroGPU runs the GPU function in a worker process and pickles its arguments and what it yields, so the
# function takes plain data and finds the engine and the cancel token here (a stop there comes from closing
# the stream), and its errors cross as plain data too (ZeroGPU would only pass on their class name).
ENGINES: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()


CANCELS: dict[str, threading.Event] = {}  # run key -> cancel token, set by the studio's Stop


def _needs_load(engine: Engine | None, request: ResolvedRequest) -> bool:
    """Whether the request's pipeline is not in the engine's cache yet (placed at startup or by a run before)."""
    if engine is None or request.pipeline_model_id not in engine.catalog:
        return False
    return (engine.catalog.get(request.pipeline_model_id).family.has_weights
            and request.pipeline_model_id not in engine.pipelines.cached_ids())


def gpu_seconds(engine_key: str, request: ResolvedRequest, run_key: str, preview_dir: str) -> int:
    """ZeroGPU's duration for one run_on_device call (same arguments): sized by the request, plus the
    model's load when it was not placed at startup."""
    return zerogpu.gpu_duration(request, loading=_needs_load(ENGINES.get(engine_key), request))


def _error_data(exc: BaseException) -> dict:
    """An exception of this package as plain data: its class by name, its message and attributes."""
    cls = type(exc)
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return {"module": cls.__module__, "name": cls.__qualname__, "text": str(exc), "attrs": attrs}


def _rebuild_error(data: dict) -> BaseException:
    """The exception `_error_data` described: the same class when it is this package's, else a RuntimeError."""
    import importlib

    cls = None
    if data["module"].split(".")[0] == __name__.split(".")[0]:
        cls = getattr(importlib.import_module(data["module"]), data["name"], None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{data['name']}: {data['text']}")
    exc = cls.__new__(cls)
    exc.args = (data["text"],)
    vars(exc).update(data["attrs"])
    return exc


@functools.partial(on_gpu, duration=gpu_seconds)
def run_on_device(engine_key: str, request: ResolvedRequest, run_key: str,
                  preview_dir: str) -> Iterator[tuple[str, object]]:
    """The GPU work of one run: stream_generation on the registered engine. Yields plain data only:
    stream_generation's events, and ("failed", error data) instead of raising."""
    cancel = CANCELS.setdefault(run_key, threading.Event())
    engine = ENGINES[engine_key]
    try:
        yield from stream_generation(engine, request, cancel=cancel, preview_dir=Path(preview_dir))
    except Exception as exc:  # noqa: BLE001  (raised again by device_events, on the caller's side)
        yield "failed", _error_data(exc)
    finally:
        CANCELS.pop(run_key, None)


def studio_events(jobs: JobQueue | None, engine_key: str, request: ResolvedRequest, run_key: str,
                  preview_dir: str) -> Iterator[tuple[str, object]]:
    """A studio run's events: through the server's job queue when the studio has one, so the studio and the REST
    jobs share its workers (one run per device at a time), else on the engine. On ZeroGPU always on the engine
    inside the GPU function (run_on_device): ZeroGPU lends a GPU to that function's call only, and a queue
    worker's thread runs outside it. A full queue raises QueueFull when the events are first asked for."""
    if jobs is None or zerogpu.is_zerogpu():
        return device_events(engine_key, request, run_key, preview_dir)
    return stream_generation(jobs, request, cancel=CANCELS[run_key], preview_dir=Path(preview_dir))


def device_events(engine_key: str, request: ResolvedRequest, run_key: str,
                  preview_dir: str) -> Iterator[tuple[str, object]]:
    """run_on_device's events, with its errors raised again here (as the class they had there)."""
    stream = run_on_device(engine_key, request, run_key, preview_dir)
    try:
        for kind, value in stream:
            if kind == "failed":
                raise _rebuild_error(value)
            yield kind, value
    finally:
        stream.close()  # closing this stream stops the generation wherever it runs

