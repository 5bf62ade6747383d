"""SAM selections with one image embedding per picture: the image encoder's output is cached by the picture's
content (bounded LRU, one cache per loaded model, so per device); a further prompt on the same picture runs only
what reads the prompt (SAM 2.1: the prompt encoder and the mask decoder; SAM 3: the text encoder and the detector).

Inputs are prepared here rather than by transformers' Sam2Processor and Sam3Processor: their image processors need
torchvision, which has no CPU build for the pinned torch. What they do is small and fixed by the model: a square
resize to the encoder's size, a normalisation, prompt coordinates scaled alike, outputs scaled back and cut.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .families.base import Prompt, Selection

if TYPE_CHECKING:
    import torch

    from .catalog import ModelEntry
    from .pipelines import PipelineCache

PICTURES_PER_MODEL = 8  # one picture's SAM 2.1 embeddings at 1024 px: ~17 MB in float32
# The training normalisations, as in the checkpoints' preprocessor_config.json: ImageNet's for SAM 2, 0.5 for SAM 3.
SAM2_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SAM3_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SAM3_TEXT_TOKENS = 32  # Sam3Processor pads every text to this many tokens
# Sam3Processor's defaults: a detection counts from this score (its logit times the presence of the concept), a
# pixel from this mask probability.
SAM3_SCORE = 0.3
SAM3_MASK = 0.5


def content_key(image: Image.Image) -> bytes:
    """The picture's identity for the cache: its size and pixels, whatever asset or upload they came from."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.digest()


def _pixels(image: Image.Image, side: int, mean_std, like: torch.Tensor) -> torch.Tensor:
    import torch

    mean, std = mean_std
    pixels_np = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32)
    pixels_np = (pixels_np / 255 - mean) / std
    return torch.from_numpy(pixels_np.transpose(2, 0, 1)[None]).to(like.device, like.dtype)


def _mask(logits: torch.Tensor, size: tuple[int, int], cut: float) -> np.ndarray:
    """(height, width) logits or probabilities scaled to the picture's (width, height), cut at `cut`: 0/255."""
    import torch.nn.functional as F

    scaled = F.interpolate(logits[None, None].float(), (size[1], size[0]), mode="bilinear", align_corners=False)
    return (scaled[0, 0] > cut).cpu().numpy().astype(np.uint8) * 255


class Predictor:
    """A loaded SAM model and the encoder outputs of the pictures it saw last. `.to(device)` moves the model (the
    pipeline cache's protocol) and forgets the outputs, which lived on the old device."""

    def __init__(self, model, *, pictures: int = PICTURES_PER_MODEL):
        self.model = model.eval()
        self.pictures = pictures
        self.encoded = 0  # pictures run through the image encoder: a cache hit leaves it as it is
        self._embeddings: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()  # the dict only; encoding runs outside it

    def to(self, device) -> Predictor:
        self.model.to(device)
        with self._lock:
            self._embeddings.clear()
        return self

    def embeddings(self, image: Image.Image, encode: Callable[[Image.Image], Any]):
        """`encode(image)`, computed at most once while `image` stays among the last `pictures` pictures."""
        key = content_key(image)
        with self._lock:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                return self._embeddings[key]
        embeddings = encode(image)
        with self._lock:
            self.encoded += 1
            self._embeddings[key] = embeddings
            while len(self._embeddings) > self.pictures:
                self._embeddings.popitem(last=False)
        return embeddings

    def select(self, image: Image.Image, prompt: Prompt) -> Selection:
        raise NotImplementedError


class Sam2Predictor(Predictor):
    """SAM 2.1 (transformers' Sam2Model): clicks and a box; the best-scored of its masks."""

    @classmethod
    def load(cls, entry: ModelEntry, cache: PipelineCache) -> Sam2Predictor:
        return cls(cache.load_transformers(entry, "Sam2Model"))

    @property
    def side(self) -> int:
        return int(self.model.config.vision_config.backbone_config.image_size[0])

    def _encode(self, image: Image.Image) -> list[torch.Tensor]:
        import torch

        pixels = _pixels(image, self.side, SAM2_MEAN_STD, next(self.model.parameters()))
        with torch.inference_mode():
            return self.model.get_image_embeddings(pixels)

    def select(self, image: Image.Image, prompt: Prompt) -> Selection:
        import torch

        embeddings = self.embeddings(image, self._encode)
        device, dtype = embeddings[-1].device, embeddings[-1].dtype
        to_model = torch.tensor([self.side / image.width, self.side / image.height], dtype=torch.float32)
        prompts = {}
        if prompt.points:
            xy = torch.tensor([[x, y] for x, y, _ in prompt.points], dtype=torch.float32) * to_model
            # Shapes: (pictures, masks asked, points per mask, 2) and (pictures, masks asked, points per mask).
            prompts["input_points"] = xy[None, None].to(device, dtype)
            prompts["input_labels"] = torch.tensor([[[label for _, _, label in prompt.points]]], device=device)
        if prompt.box is not None:
            box = torch.tensor(prompt.box, dtype=torch.float32).view(2, 2) * to_model
            prompts["input_boxes"] = box.view(1, 1, 4).to(device, dtype)
        with torch.inference_mode():
            out = self.model(image_embeddings=embeddings, multimask_output=prompt.multimask, **prompts)
            scores = out.iou_scores[0, 0].float()
            best = int(scores.argmax())
            mask_np = _mask(out.pred_masks[0, 0, best], image.size, 0.0)
        return Selection(Image.fromarray(mask_np, "L"), round(float(scores[best]), 4))


class Sam3Predictor(Predictor):
    """SAM 3 (transformers' Sam3Model): every instance of what a text names ("the cat", "all cups"); the selection
    is their union, its score the best detection's. (Its box prompts need torchvision's roi_align: not here.)"""

    def __init__(self, model, tokenizer, **kwargs):
        super().__init__(model, **kwargs)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, entry: ModelEntry, cache: PipelineCache) -> Sam3Predictor:
        return cls(cache.load_transformers(entry, "Sam3Model"), cache.load_transformers(entry, "CLIPTokenizer"))

    @property
    def side(self) -> int:
        return int(self.model.config.vision_config.backbone_config.image_size)

    def _encode(self, image: Image.Image):
        import torch

        pixels = _pixels(image, self.side, SAM3_MEAN_STD, next(self.model.parameters()))
        with torch.inference_mode():
            return self.model.get_vision_features(pixels)

    def select(self, image: Image.Image, prompt: Prompt) -> Selection:
        import torch

        vision = self.embeddings(image, self._encode)
        text = self.tokenizer([prompt.text], padding="max_length", max_length=SAM3_TEXT_TOKENS, truncation=True,
                              return_tensors="pt").to(next(self.model.parameters()).device)
        with torch.inference_mode():
            out = self.model(vision_embeds=vision, input_ids=text["input_ids"], attention_mask=text["attention_mask"])
            scores = out.pred_logits[0].sigmoid() * out.presence_logits[0].sigmoid()
            kept = scores > SAM3_SCORE
            best = round(float(scores.max()), 4)
            if not kept.any():  # nothing the text names: an empty selection, and how close the best one came
                return Selection(Image.new("L", image.size, 0), best)
            union = out.pred_masks[0][kept].sigmoid().amax(dim=0)
            return Selection(Image.fromarray(_mask(union, image.size, SAM3_MASK), "L"), best)
