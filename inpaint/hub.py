"""What every loader of weights shares, below the catalog and the families: whether the Hugging Face Hub is off (the
error of a model that cannot be had here is errors.ModelUnavailable)."""

from __future__ import annotations

import os


def hub_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE at import; the environment may have changed since.
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
