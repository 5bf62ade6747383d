"""Generation workers as Ray actors (INPAINT_RAY_ADDRESS): one per GPU of the cluster, or per CPU on a CPU-only
one. Inputs travel as image files, events stream back through Ray's streaming generators, and the results are
stored here, on the API node, by the consumer of the stream: the store needs no shared disk or database.
A worker that dies mid-job is replaced and the job goes on there, once, with the samples not yet made."""

from __future__ import annotations

import atexit
import io
import itertools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
from PIL import Image

from .assets import AssetStore
from .catalog import Catalog
from .events import Done, Event, Failed, Progress, Result, Warned
from .generate import Engine
from .pipelines import PipelineCache
from .schema import ResolvedRequest

log = logging.getLogger(__name__)

RETRIED = "a worker stopped during this job; it went on on another worker with the samples not yet made"
# How often a running remote job looks at its cancel token: well under a denoising step on any device.
CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class Made:
    """A result as it leaves a remote worker: the PNG file it stored, to be stored again on the API node."""

    seed: int
    file: bytes
    seam_report: dict | None = None


class GenerationActor:
    """An engine on one device of a Ray node, over a scratch store that holds a run's inputs and each result
    until it has been sent. `cancel` is served while `run` streams (the actor runs two calls at once)."""

    def __init__(self, catalog_file: str | None, models_dir: str | None, device: str, *, max_pipelines: int,
                 max_batch: int):
        from . import settings  # the node's own settings: its models folder, its cache

        if device == "cpu":
            import torch

            # Ray gives the actor its share of the node's CPUs; torch would otherwise start a thread per core
            # in every actor of the node, and they would contend for the same cores.
            torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        catalog = Catalog.load(catalog_file)
        self.scratch = Path(tempfile.mkdtemp(prefix="inpaint-worker-"))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)
        self.engine = Engine(catalog, AssetStore(self.scratch),
                             PipelineCache(catalog, Path(models_dir or settings.MODELS_DIR),
                                           max_pipelines=max_pipelines, device=device),
                             max_batch=max_batch)
        self.cancels: dict[str, threading.Event] = {}

    def pid(self) -> int:
        return os.getpid()

    def cancel(self, run_key: str) -> None:
        if (token := self.cancels.get(run_key)) is not None:
            token.set()

    def run(self, run_key: str, request: ResolvedRequest, image: bytes, mask: bytes,
            job_id: str | None) -> Iterator[Event | Made]:
        """Engine.run's events, each result as a Made once its file has left the scratch store."""
        store = self.engine.store
        cancel = self.cancels.setdefault(run_key, threading.Event())
        stored = [store.put(_decoded(image), kind="image", data=image)]
        stored.append(store.put(_decoded(mask), kind="mask", hidden=True, parent_id=stored[0].id, data=mask))
        request = request.model_copy(update={"image_asset_id": stored[0].id, "mask_asset_id": stored[1].id})
        try:
            for event in self.engine.run(request, cancel, job_id=job_id):
                if isinstance(event, Result):
                    file = store.file_path(event.asset.id).read_bytes()
                    store.delete_asset(event.asset.id)
                    yield Made(event.asset.seed, file, event.seam_report)
                else:
                    yield event
        finally:
            self.cancels.pop(run_key, None)
            for asset in reversed(stored):
                store.delete_asset(asset.id)


def _decoded(file: bytes) -> Image.Image:
    with Image.open(io.BytesIO(file)) as image:
        image.load()
        return image


def init(address: str | None = None, **options) -> None:
    """Join the cluster at `address` (`auto`, `ray://host:10001`; None starts a local one with `options`),
    shipping this package to its workers: the nodes need its dependencies, not its code."""
    package = str(Path(__file__).parent)
    ray.init(address=address, runtime_env={"py_modules": [package], "excludes": ["__pycache__"]}, **options)


class RayWorker:
    """A worker of the job queue backed by one actor: runs a job there and stores what comes back here."""

    def __init__(self, store: AssetStore, spawn, name: str):
        self.store = store
        self.name = name
        self._spawn = spawn  # a new actor: at start, and in place of one that died
        self.actor = spawn()  # None once it died, until the next run replaces it
        self._keys = itertools.count()

    def run(self, request: ResolvedRequest, cancel: threading.Event | None = None, *,
            job_id: str | None = None) -> Iterator[Event]:
        """Engine.run's events, from the actor; a death of the actor (its process or its node) is retried once
        on a fresh actor with the samples not yet made, so the results stored before it are kept and none is
        made twice."""
        cancel = cancel if cancel is not None else threading.Event()
        made: list[int] = []  # seeds stored so far
        for attempt in (1, 2):
            if self.actor is None:  # it died: during this job's first attempt, or in an earlier job
                self.actor = self._respawn()
            if self.actor is None:
                yield Failed("error", f"no Ray worker could be started for this job; {len(made)} of "
                                      f"{request.num_samples} results were kept")
                return
            rest = request.model_copy(update={"seed": request.seed + len(made),
                                              "num_samples": request.num_samples - len(made)})
            done_before = len(made)
            try:
                for event in self._remote(rest, cancel, job_id):
                    if isinstance(event, Result):
                        made.append(event.asset.seed)
                    elif isinstance(event, Progress):  # of this attempt: of the whole request here
                        event = Progress((done_before + event.fraction * rest.num_samples) / request.num_samples)
                    yield event
                return
            except ray.exceptions.RayActorError as exc:
                log.warning("worker %s stopped during job %s: %s", self.name, job_id, exc)
                self.actor = None  # replaced before this worker's next attempt or job
                if attempt == 2:
                    yield Failed("error", f"the worker running this job stopped twice ({type(exc).__name__}); "
                                          f"{len(made)} of {request.num_samples} results were kept")
                    return
                yield Warned(RETRIED)
            except Exception as exc:  # the cluster itself is gone: the connection, the head node
                log.exception("job %s lost the Ray cluster", job_id)
                yield Failed("error", f"the Ray cluster stopped answering ({type(exc).__name__}: {exc}); "
                                      f"{len(made)} of {request.num_samples} results were kept")
                return

    def _respawn(self):
        if not ray.is_initialized():  # the cluster was lost; creating an actor would start a local one here
            return None
        try:
            return self._spawn()
        except Exception:  # the job fails saying so
            log.exception("worker %s could not be replaced", self.name)
            return None

    def _remote(self, request: ResolvedRequest, cancel: threading.Event, job_id: str | None) -> Iterator[Event]:
        """One attempt on the current actor; results stored here as they arrive."""
        if not ray.is_initialized():  # lost: a call now would start a local cluster on this node instead
            raise ConnectionError("this server is no longer connected to the cluster")
        image = self.store.file_path(request.image_asset_id).read_bytes()
        mask = self.store.file_path(request.mask_asset_id).read_bytes()
        run_key = f"{self.name}-{next(self._keys)}"
        actor = self.actor
        stream = actor.run.options(num_returns="streaming").remote(run_key, request, image, mask, job_id)
        finished = threading.Event()

        def stop_remote() -> None:
            if ray.is_initialized():  # else the call would start a local cluster on this node
                actor.cancel.remote(run_key)

        def forward_cancel() -> None:  # the stream blocks between events: the token is watched beside it
            while not finished.wait(CANCEL_POLL_S):
                if cancel.is_set():
                    stop_remote()
                    return

        watcher = threading.Thread(target=forward_cancel, name=f"inpaint-cancel-{run_key}", daemon=True)
        watcher.start()
        ended = False
        try:
            for ref in stream:
                event = ray.get(ref)
                if isinstance(event, Made):
                    asset = self.store.put(_decoded(event.file), kind="result", hidden=request.hide_results,
                                           parent_id=request.image_asset_id, job_id=job_id, seed=event.seed,
                                           model_id=request.model_id, data=event.file)
                    event = Result(asset, event.seam_report)
                ended = isinstance(event, (Done, Failed))
                yield event
        finally:
            finished.set()
            watcher.join()
            if not ended:  # the consumer left early, or the stream broke: the remote run stops too
                stop_remote()


def connect(engine: Engine, address: str | None, *, count: int | None = None, models_dir: str | None = None,
            cpus_per_worker: int = 1) -> list[RayWorker]:
    """Workers on the Ray cluster at `address` (joined unless this process already is): one per GPU of the
    cluster, or `count`; on a cluster without GPUs, one per `cpus_per_worker` CPUs. Results go to `engine.store`."""
    if not ray.is_initialized():
        try:
            init(address)
        except ConnectionError as exc:
            raise SystemExit(f"INPAINT_RAY_ADDRESS={address!r}: no Ray cluster answers there ({exc}); start one "
                             "with `ray start --head`") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = count or gpus or max(1, int(resources.get("CPU", 1)) // cpus_per_worker)
    actor = ray.remote(GenerationActor).options(
        max_concurrency=2,  # `cancel` while `run` streams; the job queue gives an actor one job at a time
        **({"num_gpus": 1} if gpus else {"num_cpus": cpus_per_worker}))
    from . import settings

    def spawn():
        return actor.remote(settings.USER_CATALOG, models_dir, "cuda" if gpus else "cpu",
                            max_pipelines=engine.pipelines.max_pipelines, max_batch=engine.max_batch)
    return [RayWorker(engine.store, spawn, f"ray-{index}") for index in range(count)]
