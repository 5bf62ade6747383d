"""SAM 2.1 selections with one image embedding per picture: the encoder's output is cached by the picture's
content (bounded LRU, one cache per loaded model, so per device); a further prompt on the same picture runs only
the prompt encoder and the mask decoder.

Inputs are prepared here rather than by transformers' Sam2Processor: its image processor needs torchvision, which
has no CPU build for the pinned torch. What it does is small and fixed by the model: a square resize to the
encoder's size, ImageNet normalisation, prompt coordinates scaled alike, logits scaled back and cut at 0.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .families.base import Prompt, Selection

if TYPE_CHECKING:
    import torch

PICTURES_PER_MODEL = 8  # one picture's embeddings at 1024 px: ~17 MB in float32
# SAM 2's training normalisation (ImageNet's), as in the checkpoints' preprocessor_config.json.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def content_key(image: Image.Image) -> bytes:
    """The picture's identity for the cache: its size and pixels, whatever asset or upload they came from."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.digest()


class SamPredictor:
    """A loaded Sam2Model and the embeddings of the pictures it saw last. `.to(device)` moves the model (the
    pipeline cache's protocol) and forgets the embeddings, which lived on the old device."""

    def __init__(self, model, *, pictures: int = PICTURES_PER_MODEL):
        self.model = model.eval()
        self.pictures = pictures
        self.encoded = 0  # pictures run through the image encoder: a cache hit leaves it as it is
        self._embeddings: OrderedDict[bytes, list[torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # the dict only; encoding runs outside it

    @property
    def side(self) -> int:
        return int(self.model.config.vision_config.backbone_config.image_size[0])

    def to(self, device) -> SamPredictor:
        self.model.to(device)
        with self._lock:
            self._embeddings.clear()
        return self

    def embeddings(self, image: Image.Image) -> list[torch.Tensor]:
        """The image encoder's output for `image`, computed at most once while it stays among the last
        `pictures` pictures."""
        import torch

        key = content_key(image)
        with self._lock:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                return self._embeddings[key]
        parameter = next(self.model.parameters())
        side = self.side
        pixels_np = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32)
        pixels_np = (pixels_np / 255 - IMAGE_MEAN) / IMAGE_STD
        pixels = torch.from_numpy(pixels_np.transpose(2, 0, 1)[None]).to(parameter.device, parameter.dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        with self._lock:
            self.encoded += 1
            self._embeddings[key] = embeddings
            while len(self._embeddings) > self.pictures:
                self._embeddings.popitem(last=False)
        return embeddings

    def select(self, image: Image.Image, prompt: Prompt) -> Selection:
        import torch
        import torch.nn.functional as F

        embeddings = self.embeddings(image)
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
            logits = out.pred_masks[0, 0, best][None, None].float()
            selected = F.interpolate(logits, (image.height, image.width), mode="bilinear", align_corners=False)[0, 0] > 0
        mask_np = selected.cpu().numpy().astype(np.uint8) * 255
        return Selection(Image.fromarray(mask_np, "L"), round(float(scores[best]), 4))
