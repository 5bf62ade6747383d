"""What every loader of weights shares, below the catalog and the families: the error of a model that cannot be had
here, and whether the Hugging Face Hub is off."""

from __future__ import annotations

import os


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says what it needs."""

    def __init__(self, model_id: str, message: str):
        super().__init__(f"model {model_id!r} is unavailable: {message}")
        self.model_id = model_id


def hub_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE at import; the environment may have changed since.
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
