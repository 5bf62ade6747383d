"""Where a run happens: the server's job queue, or the engine in a worker thread; on ZeroGPU, in the GPU process.
Wherever it runs, the studio reads the engine's own events (inpaint.events)."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from .. import zerogpu
from ..events import Event, Preview
from ..generate import Engine
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

# ZeroGPU runs the GPU function in a worker process and pickles its arguments and what it yields, so the function
# takes plain data and finds the engine and the cancel token here by key (a stop there comes from closing the
# stream). The events it yields are plain data already: a Failed crosses as it is.
ENGINES: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()
CANCELS: dict[str, threading.Event] = {}  # run key -> cancel token, set by the studio's Stop


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


class PreviewFiles:
    """A run's previews saved as files, one strip per micro-batch and step: a Gallery re-encodes every image on
    every yield, so only the path travels to the page."""

    def __init__(self, folder: Path, run_key: str):
        self.folder, self.run_key = folder, run_key
        self.batch, self.last_step = 0, 0

    def save(self, event: Preview) -> str:
        if event.step <= self.last_step:
            self.batch += 1  # the steps start over: the next micro-batch
        self.last_step = event.step
        path = self.folder / f"preview-{self.run_key}-{self.batch:03d}-{event.step:03d}.webp"
        preview_strip(list(event.images)).save(path, quality=80)
        return str(path)


def _needs_load(engine: Engine | None, request: ResolvedRequest) -> bool:
    """Whether the request's pipeline is not in the engine's cache yet (placed at startup or by a run before)."""
    if engine is None or request.pipeline_model_id not in engine.catalog:
        return False
    return (engine.catalog.get(request.pipeline_model_id).family.has_weights
            and request.pipeline_model_id not in engine.pipelines.cached_ids())


def gpu_seconds(engine_key: str, request: ResolvedRequest, run_key: str) -> int:
    """ZeroGPU's duration for one run_on_device call (same arguments): sized by the request, plus the
    model's load when it was not placed at startup."""
    return zerogpu.gpu_duration(request, loading=_needs_load(ENGINES.get(engine_key), request))


@functools.partial(on_gpu, duration=gpu_seconds)
def run_on_device(engine_key: str, request: ResolvedRequest, run_key: str) -> Iterator[Event]:
    """The GPU work of one run: the registered engine's events, as they are (they pickle)."""
    cancel = CANCELS.setdefault(run_key, threading.Event())
    try:
        yield from ENGINES[engine_key].run(request, cancel)
    finally:
        CANCELS.pop(run_key, None)


def studio_events(jobs: JobQueue | None, engine_key: str, request: ResolvedRequest, run_key: str) -> Iterator[Event]:
    """A studio run's events: through the server's job queue when the studio has one, so the studio and the REST
    jobs share its workers (one run per device at a time), else on the engine. On ZeroGPU always on the engine
    inside the GPU function (run_on_device): ZeroGPU lends a GPU to that function's call only, and a queue
    worker's thread runs outside it. A full queue raises QueueFull when the events are first asked for. Closing
    the stream stops the generation wherever it runs, within a step."""
    if jobs is None or zerogpu.is_zerogpu():
        return run_on_device(engine_key, request, run_key)
    return jobs.run(request, CANCELS[run_key])
