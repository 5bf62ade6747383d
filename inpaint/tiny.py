"""Tiny random-weight models of each family with weights (diffusers pipelines, a transformers SAM 2), built
offline from configs and saved to disk, loaded back through the same from_pretrained as real weights."""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

KINDS = ("sd-1_5", "sd-xl", "flux.1", "sd-1_5-lora", "sam2", "sam3")
LORA_EPOCHS = ("epoch-1", "epoch-2")  # what the catalog's tiny-sd-1_5-lora entry lists
TEXT_DIM = 32  # hidden size of every tiny text encoder


def build(kind: str, folder: Path) -> None:
    """Build the tiny `kind` into `folder`: a pipeline folder, or LoRA weight files for "sd-1_5-lora".

    Built in a temporary sibling and moved into place at once, so a crash or a concurrent
    builder never leaves a half-written model behind.
    """
    builders = {"sd-1_5": _sd15, "sd-xl": _sdxl, "flux.1": _flux, "sd-1_5-lora": _sd15_lora, "sam2": _sam2,
                "sam3": _sam3}
    if kind not in builders:
        raise ValueError(f"unknown tiny model kind {kind!r}; one of {', '.join(KINDS)}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # Built in float32 on the CPU, whatever the default dtype of the caller is.
        with torch.device("cpu"):
            builders[kind](tmp)
        if folder.exists():  # a stale or half-copied folder: os.replace cannot overwrite a directory
            os.replace(folder, tmp.with_name(tmp.name + ".old"))
            shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- tokenizers (in memory: nothing to download) ------------------------------------------------

def _clip_tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    # Byte-level BPE with no merges: every byte is a token, also in its end-of-word form.
    chars = sorted(ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    # The pipelines pad and truncate to model_max_length; without it the tokenizer overflows.
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    pieces += [c for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += ["\u2581" + c for c in string.ascii_letters + string.digits]
    return T5Tokenizer(vocab=[(p, 0.0 if i < 3 else -float(i)) for i, p in enumerate(pieces)], extra_ids=0,
                       model_max_length=512)


def _clip_text(tokenizer, *, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_DIM,
        # The pooled output is taken at the eos token: it must be this tokenizer's eos id.
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


# ---- VAE: 4 blocks, so latents are 1/8 of the image like the real models ------------------------

def _vae(latent_channels: int, **family):
    from diffusers import AutoencoderKL

    # Narrow first block: the decoder's last block runs at full image size and dominates the cost.
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        in_channels=3, out_channels=3, latent_channels=latent_channels, sample_size=64, **family,
    )


# ---- families -----------------------------------------------------------------------------------

def _sd15_components() -> dict:
    from diffusers import PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(
        # 9 input channels: noisy latents (4) + mask (1) + masked-image latents (4), as in SD inpainting.
        in_channels=9, out_channels=4, sample_size=64, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8,
    )
    return dict(
        unet=unet, vae=_vae(4, scaling_factor=0.18215), text_encoder=_clip_text(tokenizer), tokenizer=tokenizer,
        # The scheduler config of the released SD 1.5 inpainting model.
        scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, image_encoder=None,
    )


def _sd15(folder: Path) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(**_sd15_components(), requires_safety_checker=False)
    pipe.save_pretrained(folder)


def _sdxl(folder: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    time_dim = 8
    unet = UNet2DConditionModel(
        in_channels=9, out_channels=4, sample_size=128, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True,
        cross_attention_dim=2 * TEXT_DIM,  # both text encoders' hidden states, concatenated
        # SDXL conditions on 6 size/crop numbers, each embedded to time_dim, plus the pooled text projection.
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_DIM,
    )
    pipe = StableDiffusionXLInpaintPipeline(
        unet=unet, vae=_vae(4, scaling_factor=0.13025),
        text_encoder=_clip_text(tokenizer), tokenizer=tokenizer,
        text_encoder_2=_clip_text(tokenizer, projection=True), tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading"),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder)


def _flux(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    latent = 16  # the real Flux VAE's channel count, so previews use the real projection
    packed = 4 * latent  # latents are packed 2x2 into the channel axis
    transformer = FluxTransformer2DModel(
        # Packed noisy latents + packed masked-image latents + the 8x8 mask packed 2x2 (8*8*4 = 256).
        in_channels=2 * packed + 256, out_channels=packed, patch_size=1,
        num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=16,
        axes_dims_rope=(4, 4, 8),  # must sum to attention_head_dim
        joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,  # Flux dev is guidance-distilled
    )
    clip_tokenizer, t5_tokenizer = _clip_tokenizer(), _t5_tokenizer()
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id, decoder_start_token_id=t5_tokenizer.pad_token_id,
    )).eval()
    pipe = FluxFillPipeline(
        transformer=transformer,
        # Flux's VAE has no quant convs and a shifted latent space.
        vae=_vae(latent, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                 use_post_quant_conv=False),
        text_encoder=_clip_text(clip_tokenizer), tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer,
        # The scheduler config of the released FLUX.1 dev models.
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                  max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
    )
    pipe.save_pretrained(folder)


def _sd15_lora(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    # Same function as tiny-sd-1_5, so the LoRA targets exactly that architecture.
    unet = _sd15_components()["unet"]
    for number, epoch in enumerate(LORA_EPOCHS, start=1):
        torch.manual_seed(1000 + number)  # each epoch its own weights
        # peft's default init zeroes LoRA B, which would make the adapter a no-op.
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name=epoch)
        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name=epoch),
            weight_name=f"{epoch}.safetensors", safe_serialization=True,
        )
        unet.delete_adapters(epoch)


def sam2_config(side: int = 1024, **backbone):
    """A SAM 2 config: SAM 2.1 tiny's architecture (transformers' defaults), or with `backbone` a smaller Hiera
    encoder whose stage widths the rest of the model follows, for pictures of `side` x `side` pixels."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    if not backbone:
        return Sam2Config()
    hiera = Sam2HieraDetConfig(image_size=[side, side], **backbone)
    # The encoder's first three resolutions (strides 4, 8, 16) feed the mask decoder.
    feature_sizes = [[side // stride] * 2 for stride in (4, 8, 16)]
    vision = Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=hiera.embed_dim_per_stage[::-1],
                              backbone_feature_sizes=feature_sizes, fpn_hidden_size=32)
    return Sam2Config(vision_config=vision, prompt_encoder_config=dict(hidden_size=32, image_size=side),
                      mask_decoder_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_dim=64,
                                               iou_head_hidden_dim=32))


def _sam2(folder: Path) -> None:
    from transformers import Sam2Model

    torch.manual_seed(0)
    # One block per stage, two in the third, 16 to 128 channels: ~0.3 M parameters, every code path of SAM 2.1's
    # image model. The global-attention block is the third stage's second: a stage's first block pools its
    # queries, which transformers' Hiera supports in windowed blocks only. Pictures at 256 px, not 1024: a
    # tenth of the time on a CPU (0.3 s an encoding, not 3 s).
    config = sam2_config(256, hidden_size=16, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                         num_attention_heads_per_stage=[1, 1, 1, 1], global_attention_blocks=[3])
    Sam2Model(config).eval().save_pretrained(folder)


def _sam3(folder: Path) -> None:
    from transformers import Sam3Config, Sam3Model, Sam3ViTConfig

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    side = 112  # 8 x 8 patches of 14 px; the real model reads 1008 px
    width = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    config = Sam3Config(
        # Two ViT blocks, the second global, as the real model alternates windowed and global attention.
        vision_config=dict(backbone_config=Sam3ViTConfig(**width, num_hidden_layers=2, image_size=side, patch_size=14,
                                                         window_size=4, global_attn_indexes=[1],
                                                         pretrain_image_size=56),
                           # The detector reads the encoder at 4x, 2x and 1x its patch grid.
                           fpn_hidden_size=32, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, projection_dim=32, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        geometry_encoder_config=dict(**width, num_layers=1),
        detr_encoder_config=dict(**width, num_layers=1),
        detr_decoder_config=dict(**width, num_layers=1, num_queries=8),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )
    Sam3Model(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
