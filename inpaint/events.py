"""What one generation reports as it runs: plain, picklable data, the same in this process and across processes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from .assets import Asset
from .errors import JobCanceled, ModelUnavailable, RequestError


@dataclass(frozen=True)
class Waiting:
    """The device is busy with another generation; this one starts when it is free."""


@dataclass(frozen=True)
class Loading:
    """The model is not in the device's cache: it loads before the first step (seconds to minutes)."""

    model_id: str


@dataclass(frozen=True)
class Regions:
    """The regions of the image that are generated, each with its box and processing size; once, before the
    first sample."""

    regions: tuple[dict, ...]


@dataclass(frozen=True)
class Preview:
    """The decoded latents of the micro-batch being made, one image per sample, after `step` of `steps`."""

    images: tuple[Image.Image, ...]
    step: int
    steps: int


@dataclass(frozen=True)
class Progress:
    fraction: float  # of the whole request, 0..1


@dataclass(frozen=True)
class Warned:
    """Something the user should know of that only the model could tell (a prompt longer than it reads)."""

    message: str


@dataclass(frozen=True)
class Result:
    """One sample, merged back and stored; its seam report when the generation measured one."""

    asset: Asset
    seam_report: dict | None = None


@dataclass(frozen=True)
class Done:
    """Every sample was made; the last event of a successful run."""


FailureKind = Literal["canceled", "bad-input", "unavailable", "error"]


@dataclass(frozen=True)
class Failed:
    """The last event of a run that did not finish: stopped (`canceled`), refused (`bad-input`, naming
    `field`), a model that cannot load here (`unavailable`) or anything else (`error`). `message` is what
    the user reads; results reported before it are kept."""

    kind: FailureKind
    message: str
    field: str | None = None
    status: int = 500  # the HTTP status that fits, for an edge that answers one

    def error(self) -> Exception:
        """The exception this failure stands for, for a caller that raises: the class `failure` read it from."""
        if self.kind == "canceled":
            return JobCanceled()
        if self.kind == "bad-input":
            return RequestError(self.field or "request", self.message.removeprefix(f"{self.field}: "),
                                status=self.status)
        if self.kind == "unavailable":
            error = ModelUnavailable.__new__(ModelUnavailable)
            RuntimeError.__init__(error, self.message)  # its message as the engine worded it
            return error
        return RuntimeError(self.message)


Event = Waiting | Loading | Regions | Preview | Progress | Warned | Result | Done | Failed


def results(events: Iterable[Event]) -> list[Asset]:
    """The stored results of a run that ended with Done, in seed order; raises what ended it otherwise."""
    assets = []
    for event in events:
        if isinstance(event, Result):
            assets.append(event.asset)
        elif isinstance(event, Failed):
            raise event.error()
    return assets


def failure(exc: BaseException) -> Failed:
    """The one translation of a generation's error into what its user is told."""
    if isinstance(exc, JobCanceled):
        return Failed("canceled", "stopped")
    if isinstance(exc, RequestError):
        return Failed("bad-input", str(exc), exc.field, exc.status)
    if isinstance(exc, ModelUnavailable):
        return Failed("unavailable", str(exc), "modelId", 503)
    return Failed("error", f"generation failed: {type(exc).__name__}: {exc}")
