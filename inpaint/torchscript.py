"""TorchScript eraser models (LaMa and MI-GAN, as IOPaint publishes them): download, load and run; tiny stand-ins.

torch is imported inside the functions, so that importing this module (and starting the server) stays cheap.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import os
import tempfile
import threading
import time
import urllib.request
import warnings
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from .errors import ModelUnavailable
from .hub import hub_offline

if TYPE_CHECKING:
    import torch

LAMA_URL = "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"
LAMA_MD5 = "e3aa4aaa15225a33ec84f9f4bc47e500"
MIGAN_URL = "https://github.com/Sanster/models/releases/download/migan/migan_traced.pt"
MIGAN_MD5 = "76eb3b1a71c400ee3290524f7a11b89c"
# For the message when the download cannot even start; otherwise the server's Content-Length is used.
_APPROX_MB = {LAMA_URL: 196.0}

LAMA_MODULO = 8  # LaMa downsamples three times: each side must divide by 8
MIGAN_SIZE = 512  # MI-GAN was traced at a fixed 512x512
MIGAN_HOLE_ABOVE = 120  # IOPaint's threshold for MI-GAN masks
LAMA_HOLE_FROM = 128
# The most pixels LaMa sees at once. Its time and memory grow with the region's area (a 40 MP region took 9 GB
# with even the tiny stand-in) and it was trained on small crops: as IOPaint's resize strategy does, a larger
# region is filled at this area and the fill brought back to full size, where only its holes are used.
LAMA_MAX_PIXELS = 1536 * 1536

log = logging.getLogger("inpaint.torchscript")
_PROGRESS_EVERY_S = 2.0
_CHUNK = 1 << 20
# One download at a time in this process: two requests for the same model must not write the same .part file.
_download_lock = threading.Lock()


# ---- weights on disk --------------------------------------------------------------------------------------------

def weights_file(model_id: str, url: str, md5: str, models_dir: Path, *, timeout_s: float = 10.0) -> Path:
    """The verified file for `url` in `models_dir`, downloaded first if it is missing or does not match `md5`.

    Raises ModelUnavailable when it cannot be had; a file that fails its checksum is never left in place.
    """
    dest = Path(models_dir) / Path(urlparse(url).path).name
    with _download_lock:
        if dest.exists():
            actual = _md5_of(dest)
            if actual == md5:
                return dest
            # A partial copy or a changed upstream file: it would fail to load, or worse, load.
            log.warning("%s has md5 %s, expected %s: deleting it and downloading again", dest, actual, md5)
            dest.unlink()
        _download(model_id, url, md5, dest, timeout_s)
        return dest


def _download(model_id: str, url: str, md5: str, dest: Path, timeout_s: float) -> None:
    mb = _APPROX_MB.get(url)

    def unavailable(reason: str) -> ModelUnavailable:
        size = f" ({mb:.0f} MB)" if mb else ""
        return ModelUnavailable(model_id, f"it needs a download of {url}{size} and network access ({reason}); "
                                          f"or put the file at {dest} by hand")

    if hub_offline():
        raise unavailable("HF_HUB_OFFLINE is set, so nothing is downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        try:
            with _urlopen(url, timeout_s) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                mb = total / 1e6 if total else mb  # the real size, should the download break off
                log.info("downloading %s from %s to %s", dest.name, url, dest.parent)
                done, last_log = 0, time.monotonic()
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if time.monotonic() - last_log >= _PROGRESS_EVERY_S:
                        last_log = time.monotonic()
                        of_total = f" of {total / 1e6:.1f}" if total else ""
                        log.info("downloading %s: %.1f%s MB", dest.name, done / 1e6, of_total)
                if total and done != total:
                    raise ConnectionError(f"the connection closed after {done} of {total} bytes")
        except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts and resets are all OSErrors
            raise unavailable(f"it failed: {e}") from e
        actual = digest.hexdigest()
        if actual != md5:
            raise ModelUnavailable(model_id, f"the download of {url} has md5 {actual}, expected {md5}; it was deleted. "
                                             f"Try again later, or put the right file at {dest} by hand")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    log.info("downloaded %s (md5 verified)", dest)


def _urlopen(url: str, timeout_s: float):
    """urlopen whose connect, name resolution included, gives up after `timeout_s`.

    urlopen's own timeout covers connect and each read, but not getaddrinfo, which can block for minutes on a
    broken resolver: so the open runs in a daemon thread that is abandoned if it does not answer in time.
    """
    opened: concurrent.futures.Future = concurrent.futures.Future()

    def open_it() -> None:
        try:
            opened.set_result(urllib.request.urlopen(url, timeout=timeout_s))
        except Exception as e:  # noqa: BLE001 - handed to the waiting caller
            opened.set_exception(e)

    threading.Thread(target=open_it, name="torchscript-urlopen", daemon=True).start()
    try:
        return opened.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        # Should it answer after all, close what nobody will read.
        opened.add_done_callback(lambda f: f.exception() is None and f.result().close())
        raise TimeoutError(f"no connection within {timeout_s:g} s") from None


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---- loading and tiny stand-ins ---------------------------------------------------------------------------------

def load(path: Path) -> torch.jit.ScriptModule:
    """The TorchScript module at `path`, on the CPU in eval mode; the caller moves it to its device."""
    import torch

    # map_location: a file traced on a GPU must load on a machine without one.
    with _torchscript_is_the_format():
        return torch.jit.load(str(path), map_location="cpu").eval()


@contextmanager
def _torchscript_is_the_format():
    """torch deprecates TorchScript in favour of torch.export, but the published LaMa and MI-GAN files are
    TorchScript: loading them (and tracing their stand-ins) must not warn on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\..*` is deprecated", category=DeprecationWarning)
        yield


def build_tiny(kind: str, path: Path) -> None:
    """Trace a small random-weight stand-in for the "lama" or "mi-gan" file, with the same call signature, to `path`.

    The weights are the same on every run (seed 0); the file is written under a temporary name and renamed into
    place, so a crash never leaves a half-written model.
    """
    import torch

    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random stream
        torch.manual_seed(0)
        module, example = _tiny(kind)
    with torch.no_grad(), _torchscript_is_the_format():
        traced = torch.jit.trace(module.eval(), example)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _torchscript_is_the_format():
            torch.jit.save(traced, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _tiny(kind: str):
    """The untraced stand-in for `kind` and example inputs to trace it with."""
    import torch
    from torch import nn

    def encoder_decoder(levels: int, width: int = 8) -> nn.Sequential:
        # Stride-2 convolutions down, transposed ones back up: fully convolutional, so the trace runs at any size
        # that divides by 2**levels; at one that does not, its output no longer matches the 1x1 skip's and the
        # sum fails, as the real models fail on unpadded input.
        layers, channels = [], 4
        for _ in range(levels):
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
            channels = width
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU()]
        return nn.Sequential(*layers, nn.ConvTranspose2d(width, 3, 2, stride=2))

    class TinyLama(nn.Module):
        """forward(image [1,3,H,W] in [0,1], mask [1,1,H,W] in {0,1}) -> [1,3,H,W] in [0,1], as big-lama.pt."""

        def __init__(self):
            super().__init__()
            self.net, self.skip = encoder_decoder(levels=3), nn.Conv2d(4, 3, 1)

        def forward(self, image, mask):
            x = torch.cat([image * (1 - mask), mask], dim=1)
            return torch.sigmoid(self.net(x) + self.skip(x))

    class TinyMigan(nn.Module):
        """forward(cat([0.5 - mask, image * (1 - mask)]) [1,4,512,512], image in [-1,1]) -> [1,3,512,512] in [-1,1],
        as migan_traced.pt."""

        def __init__(self):
            super().__init__()
            self.net, self.skip = encoder_decoder(levels=2), nn.Conv2d(4, 3, 1)

        def forward(self, x):
            return torch.tanh(self.net(x) + self.skip(x))

    examples = {  # the network and an example input to trace it with
        "lama": lambda: (TinyLama(), (torch.rand(1, 3, 64, 96), (torch.rand(1, 1, 64, 96) > 0.5).float())),
        "mi-gan": lambda: (TinyMigan(), (torch.rand(1, 4, MIGAN_SIZE, MIGAN_SIZE) * 2 - 1,)),
    }
    if kind not in examples:
        raise ValueError(f"unknown tiny model kind {kind!r}; one of {', '.join(examples)}")
    return examples[kind]()


# ---- running ----------------------------------------------------------------------------------------------------

def lama_inpaint(module, image: Image.Image, mask: Image.Image, device) -> Image.Image:
    """Fill the holes of `mask` (L, >= 128 is a hole) in `image` (RGB) with a LaMa module already on `device`,
    at most LAMA_MAX_PIXELS at once."""
    _check_sizes(image, mask)
    scale = math.sqrt(LAMA_MAX_PIXELS / (image.width * image.height))
    if scale >= 1:
        return _lama(module, image, mask, device)
    hole = mask.convert("L").point(lambda v: 255 if v >= LAMA_HOLE_FROM else 0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # A working pixel is a hole when any pixel it covers is: a thin stroke must not vanish when scaled down.
    small_hole = hole.resize(size, Image.Resampling.BOX).point(lambda v: 255 if v else 0)
    filled = _lama(module, image.convert("RGB").resize(size, Image.Resampling.LANCZOS), small_hole, device)
    return Image.composite(filled.resize(image.size, Image.Resampling.LANCZOS), image.convert("RGB"), hole)


def _lama(module, image: Image.Image, mask: Image.Image, device) -> Image.Image:
    import torch

    width, height = image.size
    # Bottom/right padding to a multiple of 8, mirrored with the edge pixel repeated (numpy's "symmetric"), as
    # IOPaint's pad_img_to_modulo does; the mask is padded the same way so the mirrored context matches its holes.
    pad = ((0, -height % LAMA_MODULO), (0, -width % LAMA_MODULO))
    rgb = np.pad(np.asarray(image.convert("RGB")), (*pad, (0, 0)), mode="symmetric")
    hole = np.pad(np.asarray(mask.convert("L")) >= LAMA_HOLE_FROM, pad, mode="symmetric")
    with torch.inference_mode():
        image_t = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device, torch.float32) / 255
        mask_t = torch.from_numpy(hole)[None, None].to(device, torch.float32)
        out = module(image_t, mask_t)[0, :, :height, :width]
        out = (out * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(out)


def migan_inpaint(module, image: Image.Image, mask: Image.Image, device) -> Image.Image:
    """Fill the holes of `mask` (L, > 120 is a hole) in `image` (RGB, a region of any size) with a MI-GAN module
    already on `device`; the module works at 512x512, so the region is resized there and back."""
    import torch

    _check_sizes(image, mask)
    square = (MIGAN_SIZE, MIGAN_SIZE)
    rgb = np.array(image.convert("RGB").resize(square, Image.Resampling.LANCZOS))  # a copy: torch wants it writable
    # NEAREST keeps the mask binary: a resampled grey edge would half-erase pixels the model then treats as known.
    hole = np.asarray(mask.convert("L").resize(square, Image.Resampling.NEAREST)) > MIGAN_HOLE_ABOVE
    with torch.inference_mode():
        image_t = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device, torch.float32) / 127.5 - 1
        mask_t = torch.from_numpy(hole)[None, None].to(device, torch.float32)
        out = module(torch.cat([0.5 - mask_t, image_t * (1 - mask_t)], dim=1))[0]
        out = (out * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    # The model repaints everything; keeping the known pixels at 512 stops its guesses there from bleeding into the
    # hole's edge when resized back, and pasting the original outside the hole keeps those pixels exact.
    filled = Image.fromarray(np.where(hole[..., None], out, rgb)).resize(image.size, Image.Resampling.LANCZOS)
    full_hole = mask.convert("L").point(lambda v: 255 if v > MIGAN_HOLE_ABOVE else 0)
    return Image.composite(filled, image.convert("RGB"), full_hole)


def _check_sizes(image: Image.Image, mask: Image.Image) -> None:
    if image.size != mask.size:
        raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]}, the image {image.size[0]}x{image.size[1]}")
