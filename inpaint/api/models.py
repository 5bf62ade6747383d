"""`/models`: the model catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from ..errors import NotFoundError
from ..responses import ModelEnvelope, ModelList, ModelOut
from .deps import EngineDep, Router

router = Router(tags=["models"])


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True, summary="List the model catalog")
def list_models(engine: EngineDep) -> dict:
    """The model catalog: types, defaults, ranges, availability; epochs and compliant bases of LoRAs."""
    return {"models": [ModelOut.of(entry) for entry in engine.catalog.entries()]}


@router.get("/models/{modelId}", response_model=ModelEnvelope, response_model_exclude_unset=True, summary="Get a model")
def get_model(engine: EngineDep,
              model_id: Annotated[str, Path(alias="modelId", description="A model id of the catalog.")]) -> dict:
    """One model of the catalog, as `GET /models` lists it."""
    if model_id not in engine.catalog:
        raise NotFoundError("modelId", f"no model {model_id[:80]!r}; `GET /models` lists them")
    return {"model": ModelOut.of(engine.catalog.get(model_id))}
