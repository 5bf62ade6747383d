"""Object erasers as TorchScript files, run as IOPaint runs them: LaMa and MI-GAN. Deterministic, no prompt;
fast on a CPU. Downloaded on first use into the models folder and checked against their md5."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import ModelUnavailable
from .base import Family, GpuCost

TINY_FILE = "model.pt"  # a stand-in's file inside its folder of the models directory


@dataclass(frozen=True)
class TorchScriptEraser(Family):
    runner: str = ""  # the function of inpaint.torchscript that runs one region
    tiny_kind: str = ""  # the stand-in built for `tiny:` sources

    def unavailable(self, entry) -> str | None:
        """Known before anything is stored: a file still to download while downloads are switched off."""
        if entry.source_kind == "url" and entry.availability() == "needs download":
            from ..hub import hub_offline

            if hub_offline():
                return (f"it needs a download of {entry.source}, but HF_HUB_OFFLINE is set; put the file in the "
                        "models folder (INPAINT_MODELS_DIR) or unset it")
        return None

    def load(self, entry, cache):
        from .. import torchscript

        kind = entry.source_kind
        if kind == "tiny":
            path = cache.models_dir / entry.id / TINY_FILE
            if not path.is_file():
                torchscript.build_tiny(self.tiny_kind, path)
        elif kind == "url":
            path = torchscript.weights_file(entry.id, entry.source, entry.md5, cache.models_dir)
        else:
            path = Path(entry.source)
            if not path.is_file():
                raise ModelUnavailable(entry.id, f"its file {path} does not exist")
        return torchscript.load(path)

    def run(self, model, request, regions, masks, seeds, on_step) -> list[Image.Image]:
        from .. import torchscript

        return [getattr(torchscript, self.runner)(model.pipe, region, mask, model.device)
                for region, mask in zip(regions, masks)]


# One forward pass per region: a fraction of a second on a GPU slice, plus the file read on a cold load.
LAMA = TorchScriptEraser("lama", "LaMa", has_weights=True, runner="lama_inpaint", tiny_kind="lama",
                         gpu_cost=GpuCost(call_s=1.0, step_s_per_mp=0.0, sample_s_per_mp=0.3, load_s=5.0))
MI_GAN = TorchScriptEraser("mi-gan", "MI-GAN", has_weights=True, runner="migan_inpaint", tiny_kind="mi-gan",
                           gpu_cost=GpuCost(call_s=1.0, step_s_per_mp=0.0, sample_s_per_mp=0.2, load_s=2.0))
