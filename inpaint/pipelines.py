"""The pipeline cache: loaded models of the families with weights, by id; the only place that calls
from_pretrained and picks device and dtype."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import Catalog, ModelEntry
from .errors import ModelUnavailable
from .families import Family
from .hub import hub_offline

# torch and diffusers take seconds to import: they are imported by the first diffusion request, so the server
# starts and classical models run without them.
if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

HUB_PROBE_TIMEOUT_S = 5.0
# One load at a time in the process, whichever cache (device) asks: the lazy imports of diffusers and transformers
# are not thread-safe (two devices loading their first model at once saw `diffusers` without its pipeline
# classes). Loads read the disk or the network; they gain little from running side by side.
_LOADING = threading.Lock()  # an unreachable Hub must fail a request in seconds, not hang on retries


@dataclass
class LoadedPipeline:
    model_id: str
    family: Family
    pipe: DiffusionPipeline | torch.jit.ScriptModule  # what the family's load gave, on `device`
    device: torch.device
    dtype: torch.dtype
    # Held by the caller for a whole generation: schedulers and LoRA adapters are not thread-safe.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _from_pretrained(cls: type[DiffusionPipeline], source: str | Path, **kwargs) -> DiffusionPipeline:
    # The single call site, so tests can count real loads.
    return cls.from_pretrained(source, **kwargs)


# ---- the Hugging Face Hub: cache first, then a bounded reachability probe -----------------------

def _probe_hub(model_id: str, repo: str, filename: str) -> None:
    """Raise ModelUnavailable unless `filename` of `repo` can be downloaded now."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    needs = f"it needs a download from the Hugging Face Hub (repo {repo!r})"
    if hub_offline():
        raise ModelUnavailable(model_id, f"{needs}, but HF_HUB_OFFLINE is set and it is not in the local cache")
    outcome: list[Exception | None] = []

    def head() -> None:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename), timeout=HUB_PROBE_TIMEOUT_S)
            outcome.append(None)
        except Exception as exc:  # handed over to the waiting thread
            outcome.append(exc)

    # A thread with a deadline, because name resolution is not covered by the HTTP timeout.
    probe = threading.Thread(target=head, daemon=True)
    probe.start()
    probe.join(HUB_PROBE_TIMEOUT_S + 1)
    if not outcome:
        raise ModelUnavailable(model_id, f"{needs}, which did not answer within {HUB_PROBE_TIMEOUT_S:.0f} s")
    exc = outcome[0]
    if exc is None:
        return
    if isinstance(exc, GatedRepoError):
        raise ModelUnavailable(model_id, f"{repo!r} is gated: accept its licence on huggingface.co and set "
                                         "HF_TOKEN to a token of that account") from exc
    # The Hub answers 401 for missing repos too, so "not found" may also mean "private".
    if isinstance(exc, RepositoryNotFoundError):
        raise ModelUnavailable(model_id, f"the Hub has no repo {repo!r}, or it is private (set HF_TOKEN)") from exc
    if isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code in (401, 403):
        raise ModelUnavailable(model_id, f"the Hub refused access to {repo!r}: set HF_TOKEN to a token that "
                                         "can read it (and accept its licence if it has one)") from exc
    if isinstance(exc, EntryNotFoundError):
        raise ModelUnavailable(model_id, f"the Hub repo {repo!r} has no {filename!r}") from exc
    raise ModelUnavailable(model_id, f"{needs}, which cannot be reached ({type(exc).__name__}: {exc}); "
                                     "connect to the network or pre-fill the Hugging Face cache") from exc


def _download_error(model_id: str, repo: str, exc: OSError) -> ModelUnavailable:
    from huggingface_hub.errors import GatedRepoError

    if isinstance(exc, GatedRepoError):
        return ModelUnavailable(model_id, f"{repo!r} is gated: accept its licence and set HF_TOKEN")
    return ModelUnavailable(model_id, f"downloading {repo!r} failed ({exc}); it needs network access and "
                                      "free disk space in the Hugging Face cache (HF_HOME)")


def _load_from_hub(model_id: str, cls: type[DiffusionPipeline], repo: str, marker: str = "model_index.json",
                   **kwargs) -> DiffusionPipeline:
    """`cls` from the Hub's `repo`, from the cache when it is there; `marker` is a file every copy of it has."""
    try:
        return _from_pretrained(cls, repo, local_files_only=True, **kwargs)
    except OSError:  # not (fully) in the cache
        pass
    _probe_hub(model_id, repo, marker)
    try:
        return _from_pretrained(cls, repo, **kwargs)
    except OSError as exc:
        raise _download_error(model_id, repo, exc) from exc


def _hub_file(model_id: str, repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except OSError:
        pass
    _probe_hub(model_id, repo, filename)
    try:
        return Path(hf_hub_download(repo, filename))
    except OSError as exc:
        raise _download_error(model_id, repo, exc) from exc


# ---- the cache --------------------------------------------------------------------------------

class PipelineCache:
    """Loaded pipelines by model id, least recently used evicted beyond `max_pipelines`."""

    def __init__(self, catalog: Catalog, models_dir: Path, *, max_pipelines: int = 2, device: str | None = None):
        self.catalog = catalog
        self.models_dir = Path(models_dir)
        self.max_pipelines = max(1, max_pipelines)
        self._device_name = device
        self._device: torch.device | None = None
        self._pipelines: OrderedDict[str, LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()  # guards the two dicts, never held while loading
        self._id_locks: dict[str, threading.Lock] = {}  # one load (or tiny build) per id at a time

    @property
    def device(self) -> torch.device:
        """Picked on first use, not at construction: asking torch means importing it."""
        if self._device is None:
            import torch

            self._device = torch.device(self._device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
        return self._device

    def dtype_for(self, family: Family) -> torch.dtype:
        import torch

        return getattr(torch, family.cuda_dtype) if self.device.type == "cuda" else torch.float32

    def cached_ids(self) -> list[str]:
        """Loaded ids, least recently used first."""
        with self._lock:
            return list(self._pipelines)

    def get(self, model_id: str) -> LoadedPipeline:
        entry = self.catalog.get(model_id)
        if not entry.family.has_weights:
            raise ValueError(f"{model_id!r} is a {entry.type.name} model: it has no weights to load")
        if entry.type.is_lora:
            raise ValueError(f"{model_id!r} is a LoRA: load its base model and apply it with concepts_applied")
        with self._lock:
            if model_id in self._pipelines:
                self._pipelines.move_to_end(model_id)
                return self._pipelines[model_id]
            id_lock = self._id_locks.setdefault(model_id, threading.Lock())
        with id_lock:
            with self._lock:  # loaded by another thread while this one waited
                if model_id in self._pipelines:
                    self._pipelines.move_to_end(model_id)
                    return self._pipelines[model_id]
            loaded = self._load(entry)  # on the CPU: a model that fails to load evicts nothing
            # Make room before moving it, so a GPU never holds max_pipelines + 1 models at once.
            self._evict(self.max_pipelines - 1)
            loaded.pipe.to(self.device)
            with self._lock:
                self._pipelines[model_id] = loaded
            self._evict(self.max_pipelines)  # loads of other ids may have filled it meanwhile
            return loaded

    def _evict(self, keep: int) -> None:
        with self._lock:
            evicted = [self._pipelines.popitem(last=False) for _ in range(max(0, len(self._pipelines) - keep))]
        if not evicted:
            return
        # The memory comes back once no request holds the pipeline any more; a running one finishes.
        del evicted
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _load(self, entry: ModelEntry) -> LoadedPipeline:
        with _LOADING:
            model = entry.family.load(entry, self)
        return LoadedPipeline(entry.id, entry.family, model, self.device, self.dtype_for(entry.family))

    def load_diffusers(self, entry: ModelEntry, class_name: str) -> DiffusionPipeline:
        """A diffusers pipeline of `class_name` from the Hub, a tiny model's folder or a local folder."""
        import diffusers

        cls = getattr(diffusers, class_name)
        dtype = self.dtype_for(entry.family)
        # diffusers picks PyTorch's scaled_dot_product_attention by default; nothing to set.
        if entry.source_kind == "hub":
            pipe = _load_from_hub(entry.id, cls, entry.source.split(":", 1)[1], dtype=dtype)
        else:
            pipe = _from_pretrained(cls, self._local_folder(entry), dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def load_transformers(self, entry: ModelEntry, class_name: str):
        """A transformers model (in eval mode) or tokenizer of `class_name` from the Hub, a tiny model's folder or a
        local folder."""
        import torch
        import transformers

        transformers.logging.disable_progress_bar()  # a bar per load and per tiny build, on the server's stderr
        cls = getattr(transformers, class_name)
        weights = issubclass(cls, torch.nn.Module)
        kwargs = {"dtype": self.dtype_for(entry.family)} if weights else {}
        if entry.source_kind == "hub":
            loaded = _load_from_hub(entry.id, cls, entry.source.split(":", 1)[1], entry.family.hub_marker, **kwargs)
        else:
            loaded = _from_pretrained(cls, self._local_folder(entry), **kwargs)
        return loaded.eval() if weights else loaded

    def _local_folder(self, entry: ModelEntry) -> Path:
        """The folder of a tiny model (built on first use) or of a user's local model."""
        marker = entry.family.hub_marker
        if entry.source_kind == "tiny":
            folder = self.models_dir / entry.id
            marker = marker if not entry.type.is_lora else entry.weight_name.format(epoch=entry.epochs[-1])
            if not (folder / marker).exists():
                from . import tiny  # builds with torch: imported when a tiny model is first used

                tiny.build(entry.source.split(":", 1)[1], folder)
            return folder
        folder = Path(entry.source)
        if not folder.is_dir():
            raise ModelUnavailable(entry.id, f"its folder {folder} does not exist; put the model there or fix the "
                                             "catalog entry")
        if not entry.type.is_lora and not (folder / marker).is_file():
            raise ModelUnavailable(entry.id, f"{folder} is not a saved {entry.family.title} model (no {marker}); "
                                             "save it with save_pretrained")
        return folder

    def lora_file(self, entry: ModelEntry, epoch: str) -> Path:
        """The weight file of one epoch of a LoRA entry (the resolved request's: schema.resolve checked that the
        entry has it), fetched or built on first use."""
        name = entry.weight_name.format(epoch=epoch)
        if entry.source_kind == "hub":
            return _hub_file(entry.id, entry.source.split(":", 1)[1], name)
        with self._lock:
            id_lock = self._id_locks.setdefault(entry.id, threading.Lock())
        with id_lock:  # two first requests must not build one tiny LoRA twice
            path = self._local_folder(entry) / name
        if not path.is_file():
            raise ModelUnavailable(entry.id, f"its weight file {path} does not exist")
        return path


# ---- per request ------------------------------------------------------------------------------

@contextmanager
def concepts_applied(loaded: LoadedPipeline, adapters: list[tuple[Path, float]]):
    """Apply LoRA files with their scales for the duration of the block; call it holding `loaded.lock`.

    The adapters live in the shared modules, so every per-request pipeline of `loaded` sees them.
    On exit they are unloaded (peft layers removed), which gives back the bare model bit for bit.
    """
    if not adapters:
        yield
        return
    pipe = loaded.pipe
    try:
        names = []
        for index, (path, _) in enumerate(adapters):
            name = f"concept-{index}"  # by position: one file may be applied twice with two scales
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[float(scale) for _, scale in adapters])
        yield
    finally:
        pipe.unload_lora_weights()
