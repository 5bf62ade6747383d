"""`/assets`: upload, list, get, download and delete the store's images."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from .. import imageops
from ..assets import ASSET_ID_PATTERN
from ..errors import RequestError
from ..responses import AssetDeleted, AssetEnvelope, AssetList
from .deps import AssetIdPath, EngineDep, OriginalAssets, Router, asset_out, errors, json_body, path_id, read_json

ASSET_CACHE = "private, max-age=31536000, immutable"  # an asset's files never change once written
FILE_RESPONSE = {"content": {"image/webp": {"schema": {"type": "string", "format": "binary"}},
                             "image/png": {"schema": {"type": "string", "format": "binary"}},
                             "image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                 "description": "The image file."}


class _AssetIdConvertor(Convertor[str]):
    """Path segments that look like asset ids belong to the API; other `/assets/...` paths are the UI's
    own static files (Gradio serves its frontend bundle under `/assets/`)."""

    regex = "asset_[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("asset_id", _AssetIdConvertor())


class AssetFileResponse(FileResponse):
    """A file with Range support whose refusals (a malformed or unsatisfiable Range) take the API's error
    shape; Starlette answers them in plain text."""

    # Each chunk is a hop to a worker thread and a pass through every middleware: with Starlette's 64 KiB, a
    # 2048 px result (7 MB) took 110 of each and twice as long to download as with 1 MiB.
    chunk_size = 2**20

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise RequestError("range", f"the Range header {http_range[:60]!r} is malformed ({exc.content})") from None
        except RangeNotSatisfiable:
            raise HTTPException(416, f"the Range {http_range[:60]!r} is outside the file's {file_size} bytes",
                                headers={"Content-Range": f"bytes */{file_size}"}) from None


class AssetUpload(BaseModel):
    """The body of `POST /assets`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="The image as a data URL (png/jpeg/webp). Its alpha channel is kept, "
                                   "so the asset can also serve as a mask (`maskId`).")
    hide: StrictBool = Field(False, description="Hide the asset from `GET /assets`.")
    parent_id: str | None = Field(None, alias="parentId", max_length=200, description="The parent asset's id.")


async def _upload_body(request: Request) -> AssetUpload:
    """The body of `POST /assets`, read once the key and the JSON type were checked: FastAPI reads a declared
    body whole before the route's dependencies run, so a client without the key could make it read 50 MB."""
    body = await read_json(request)
    try:
        return AssetUpload.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _asset_id(value: str) -> str:
    return path_id(value, ASSET_ID_PATTERN, "assetId", "asset")


router = Router(tags=["assets"])


@router.get("/assets", response_model=AssetList, summary="List the visible assets")
def list_assets(request: Request, engine: EngineDep, original_assets: OriginalAssets = False,
                limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
                offset: Annotated[int, Query(ge=0, le=2**62, description="Assets to skip.")] = 0) -> dict:
    """The assets that are not hidden, newest first."""
    assets = engine.store.list(limit=limit, offset=offset)
    return {"assets": [asset_out(request, asset, original_assets) for asset in assets]}


# 503: busy decoding other images; 507: the disk is full.
@router.post("/assets", response_model=AssetEnvelope, summary="Upload an image", responses=errors(503, 507),
             **json_body(AssetUpload))
def upload_asset(request: Request, engine: EngineDep, upload: Annotated[AssetUpload, Depends(_upload_body)]) -> dict:
    """Store an image; it can then be used as `image`/`imageId` or `maskId` of a request."""
    asset = engine.upload(imageops.decode_data_url(upload.image, field="image"), hide=upload.hide,
                          parent_id=upload.parent_id)
    return {"asset": asset_out(request, asset, False)}


@router.get("/assets/{assetId:asset_id}", response_model=AssetEnvelope, summary="Get an asset")
def get_asset(request: Request, engine: EngineDep, asset_id: AssetIdPath,
              original_assets: OriginalAssets = False) -> dict:
    """One asset by id, hidden ones included."""
    asset = engine.store.get(_asset_id(asset_id))
    return {"asset": asset_out(request, asset, original_assets)}


@router.get("/assets/{assetId:asset_id}/file", response_class=FileResponse, summary="Download an asset's file",
            responses={200: FILE_RESPONSE})
def asset_file(engine: EngineDep, asset_id: AssetIdPath,
               original: Annotated[bool, Query(description=(
                   "true: the original file (a PNG, or the JPEG or WebP as uploaded); false: the WebP rendition, "
                   "made on its first request."))] = False) -> FileResponse:
    """The asset's file."""
    store = engine.store
    asset = store.get(_asset_id(asset_id))
    path = store.file_path(asset.id, original=original)
    return AssetFileResponse(path, media_type=asset.mime_type if original else "image/webp",
                             headers={"Cache-Control": ASSET_CACHE})


# 409: another asset or a saved job names it.
@router.delete("/assets/{assetId:asset_id}", response_model=AssetDeleted, summary="Delete an asset",
               responses=errors(409))
def delete_asset(engine: EngineDep, asset_id: AssetIdPath) -> dict:
    """Delete an asset and its files; refused (409) while another asset or a saved job names it."""
    asset = engine.store.delete_asset(_asset_id(asset_id))
    return {"deletedAssetIds": [asset.id]}
