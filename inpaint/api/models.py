"""`/models`: the model catalog."""

from __future__ import annotations

from ..responses import ModelList, ModelOut
from .deps import EngineDep, Router

router = Router(tags=["models"])


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True, summary="List the model catalog")
def list_models(engine: EngineDep) -> dict:
    """The model catalog: types, defaults, ranges, availability; epochs and compliant bases of LoRAs."""
    return {"models": [ModelOut.of(entry) for entry in engine.catalog.entries()]}
