"""Random-weight SD-1.5-shaped pipelines for timing, built from configs, saved once and loaded like any catalog model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from inpaint import tiny
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from inpaint.pipelines import PipelineCache

CACHE_DIR = Path(__file__).with_name(".cache")
MID_MODEL_ID = "bench-sd-1_5-mid"
# The same folder under a second id: the cache keys by id, so this is a second, separately loaded model.
MID_MODEL_ID_B = "bench-sd-1_5-mid-b"
REAL_MODEL_ID = "bench-sd-1_5-real"


@dataclasses.dataclass(frozen=True)
class Shape:
    """The widths of an SD-1.5-shaped inpainting pipeline; `real()` is the released model's."""

    name: str
    unet_channels: tuple[int, ...]
    unet_down: tuple[str, ...]
    unet_up: tuple[str, ...]
    vae_channels: tuple[int, ...]
    vae_groups: int
    text_dim: int
    text_layers: int
    text_heads: int

    @property
    def folder_name(self) -> str:
        # Part of the folder name, so a changed shape never reuses weights built for another.
        digest = hashlib.sha1(repr(dataclasses.astuple(self)).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"


_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

# SD 1.5's layout (4 UNet levels of 2 layers, 4-block VAE, latents at 1/8) at a fifth of the UNet's width
# and an eighth of the VAE's. Attention stays on the two middle levels only: at the top level (64x64
# latents, 4096 tokens) attention costs grow with tokens^2 x width, so at a reduced width it would dwarf
# the convolutions, which it does not in the real model. Measured on 2 CPU cores: one CFG step (UNet,
# batch 2) at 512x512 ~0.45 s, a VAE decode ~1x and an encode ~0.5x of that, the real model's proportions.
MID = Shape(
    name="sd-1_5-mid",
    unet_channels=(64, 128, 256, 256),
    unet_down=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    unet_up=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    vae_channels=(16, 32, 64, 64),
    vae_groups=16,
    text_dim=128,
    text_layers=4,
    text_heads=4,
)
# stable-diffusion-v1-5/stable-diffusion-inpainting's configs (random weights; CLIP's 49408-token
# vocabulary is replaced by the byte-level offline tokenizer, which changes nothing but the embedding table).
REAL = Shape(
    name="sd-1_5-real",
    unet_channels=(320, 640, 1280, 1280),
    unet_down=_SD_DOWN,
    unet_up=_SD_UP,
    vae_channels=(128, 256, 512, 512),
    vae_groups=32,
    text_dim=768,
    text_layers=12,
    text_heads=12,
)


def build(shape: Shape, folder: Path) -> None:
    """Build `shape` with fixed random weights into `folder` (atomically: a temporary sibling moved into place)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with torch.device("cpu"):
            torch.manual_seed(0)
            tokenizer = tiny._clip_tokenizer()
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=shape.text_dim, intermediate_size=4 * shape.text_dim,
                num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
                max_position_embeddings=77, projection_dim=shape.text_dim, hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )).eval()
            unet = UNet2DConditionModel(
                # noisy latents (4) + mask (1) + masked-image latents (4), as in SD inpainting
                in_channels=9, out_channels=4, sample_size=64, layers_per_block=2,
                block_out_channels=shape.unet_channels, down_block_types=shape.unet_down,
                up_block_types=shape.unet_up, cross_attention_dim=shape.text_dim,
                attention_head_dim=8,  # SD 1.5's value (diffusers reads it as the number of heads)
            )
            vae = AutoencoderKL(
                block_out_channels=shape.vae_channels, layers_per_block=2, norm_num_groups=shape.vae_groups,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                in_channels=3, out_channels=3, latent_channels=4, sample_size=512, scaling_factor=0.18215,
            )
            pipe = StableDiffusionInpaintPipeline(
                unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                # The scheduler config of the released SD 1.5 inpainting model.
                scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
                safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
            )
            pipe.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_folder(shape: Shape) -> Path:
    """The saved pipeline of `shape`, built on first use."""
    folder = CACHE_DIR / "models" / shape.folder_name
    if not (folder / "model_index.json").is_file():
        build(shape, folder)
    return folder


def catalog(shape: Shape = MID) -> Catalog:
    """The shipped catalog plus the benchmark models, from a user catalog file as a user would add them."""
    folder = model_folder(shape)
    ids = [MID_MODEL_ID, MID_MODEL_ID_B] if shape is MID else [REAL_MODEL_ID]
    entries = [{"id": model_id, "type": "sd-1_5", "source": str(folder),
                "description": f"benchmark pipeline {shape.name}, random weights"} for model_id in ids]
    path = catalog_path(shape)
    path.write_text(json.dumps({"models": entries}, indent=1))
    return Catalog.load(path)


def catalog_path(shape: Shape = MID) -> Path:
    """The user catalog file `catalog(shape)` writes: a server started with INPAINT_CATALOG set to it sees the
    benchmark models."""
    return CACHE_DIR / f"catalog-{shape.name}.json"


def engine(data_dir: Path, shape: Shape = MID, *, device: str | None = "cpu", max_batch: int | None = None) -> Engine:
    """An engine over a fresh asset store in `data_dir`, with room for both benchmark model ids."""
    cat = catalog(shape)
    pipelines = PipelineCache(cat, CACHE_DIR / "models", max_pipelines=2, device=device)
    store = AssetStore(data_dir)
    return Engine(cat, store, pipelines) if max_batch is None else Engine(cat, store, pipelines, max_batch=max_batch)
