"""The request is defined once, in inpaint.schema: the CLI's flags, the OpenAPI schema, the studio's API parameters
and the defaults GET /models shows follow its fields, with no list of their own to keep in step."""

import argparse
import inspect
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import Field

from inpaint import flags, schema
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.errors import RequestError
from inpaint.generate import Engine
from inpaint.responses import ModelOut
from inpaint.schema import InpaintRequest
from inpaint.ui.fields import FIELDS, api_function

# Request fields the studio does not offer as parameters: it uploads its own picture and mask, and keeps its
# inputs hidden under the results it shows. Every other field needs its row in inpaint/ui/fields.py.
STUDIO_LEAVES_OUT = {"imageId", "maskId", "hide", "hideResults", "parentId"}


def field_names(model: type = InpaintRequest) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def request_flags() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    flags.add_request_flags(parser)
    return parser


class WithTileSize(InpaintRequest):
    """The request with one more field, as a change adding it would make."""

    tile_size: int = Field(0, alias="tileSize", ge=0, le=64, description="Tiles of this many pixels (a test field).")
    tiling: Literal["none", "grid"] = Field("none", description="How tiles are laid out (a test field).")


def test_every_request_field_but_the_inputs_is_a_cli_flag_with_the_schema_help():
    parsed = vars(request_flags().parse_args([]))
    assert set(parsed) == field_names() - set(flags.INPUT_FIELDS)
    assert all(value is None for value in parsed.values())  # a flag not given leaves the file's field alone
    help_text = " ".join(request_flags().format_help().split())
    for name, info in InpaintRequest.model_fields.items():
        if (info.alias or name) not in flags.INPUT_FIELDS:
            assert " ".join(info.description.split())[:40] in help_text


def test_a_new_schema_field_is_a_cli_flag_with_its_type_and_choices(monkeypatch):
    monkeypatch.setattr(flags, "InpaintRequest", WithTileSize)
    parser = request_flags()
    assert parser.parse_args(["--tile-size", "16", "--tiling", "grid"]).tileSize == 16
    assert parser.parse_args(["--tiling", "grid"]).tiling == "grid"
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--tiling", "hex"])
    # Bounds are the schema's to check, naming the field, as for any body.
    body = flags.with_flags({"modelId": "opencv-telea"}, parser.parse_args(["--tile-size", "99"]))
    with pytest.raises(RequestError, match="less than or equal to 64") as refused:
        schema.validated(WithTileSize, body, "the inpaint request")
    assert refused.value.field == "tileSize"


def test_the_openapi_request_body_is_the_schema(tmp_path, pipeline_cache):
    engine = Engine(Catalog.load(), AssetStore(tmp_path / "data"), pipeline_cache)
    try:
        with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
            described = client.get("/openapi.json").json()["components"]["schemas"]
    finally:
        engine.store.close()
    # FastAPI writes the OpenAPI document without null values: a `"default": null` is left out there.
    own = without_nulls(InpaintRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}"))
    assert described["InpaintRequest"] == {key: value for key, value in own.items() if key != "$defs"}
    assert set(described["InpaintRequest"]["properties"]) == field_names()
    for name, nested in own["$defs"].items():
        assert described[name] == nested


def without_nulls(value):
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def test_every_request_field_has_its_studio_parameter_with_the_schema_default():
    parameters = inspect.signature(api_function(lambda values, state, request: iter(()))).parameters
    rows = {field.param: field for field in FIELDS}
    assert set(rows) <= set(parameters)
    offered = {(field.key or field.param).partition(".")[0] for field in FIELDS}
    assert field_names() - offered == STUDIO_LEAVES_OUT
    assert not STUDIO_LEAVES_OUT & offered
    for field in FIELDS:
        name, _, part = (field.key or field.param).partition(".")
        info = next((info for key, info in InpaintRequest.model_fields.items() if (info.alias or key) == name), None)
        if field.sent and field.default is not None and info is not None:
            default = info.get_default(call_default_factory=True)
            # A nested field's parts default to "nothing added" when the object itself is absent.
            assert field.default == (getattr(default, part, 0) if part else default), field.param


def test_the_defaults_models_show_are_the_schema_defaults():
    catalog = Catalog.load()
    defaults = ModelOut.of(catalog.get("tiny-sd-1_5")).defaults
    assert defaults["numInferenceSteps"] == schema.default_steps(catalog.get("tiny-sd-1_5")) == 12  # its own
    assert ModelOut.of(catalog.get("sd-1_5-inpainting")).defaults["numInferenceSteps"] == schema.DEFAULT_STEPS
    assert defaults["strength"] == InpaintRequest.model_fields["strength"].default
