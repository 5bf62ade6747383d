"""The painter's Select tool and the studio's `/segment` API: an object selected by clicks, a box or a text through
the engine's own segmentation (inpaint.segment), its mask handed to the painter as paint (select.js lands it)."""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from .. import imageops
from ..catalog import Catalog
from ..errors import RequestError
from ..segment import Segmented, segment
from .fields import model_label
from .masks import layer_from_mask
from .uploads import upload_bytes

# A picture is stored once for its selections: each click names its asset, and the engine decodes it from the store
# (the picture's SAM embedding is cached by its pixels in any case). A handful of pictures per server is plenty.
STORED_PICTURES = 32
# What the page calls the segment request's fields in what it says.
FIELD_WORDS = {"image": "Picture", "points": "Select", "box": "Select (box)", "text": "Select (text)",
               "modelId": "Select with"}
SELECT_HINT = "Click an object to select it; Alt-click or right-click removes; drag a box around one."


def selector_choices(catalog: Catalog) -> list[tuple[str, str]]:
    return [(model_label(e), e.id) for e in catalog.entries() if e.family.selects]


def best_selector(catalog: Catalog) -> str | None:
    """The picker's default: a real SAM model whose weights are already here (clicks first: the Select tool's main
    gesture), else GrabCut, which needs none. Random-weight test models are never a default."""
    selecting = [e for e in catalog.entries() if e.family.selects and e.availability() == "offline"
                 and e.source_kind != "tiny"]
    ranked = sorted(selecting, key=lambda e: (not e.family.has_weights, "points" not in e.family.selects))
    return ranked[0].id if ranked else None


def reads_text(catalog: Catalog, model_id: str | None) -> bool:
    return model_id in catalog and "text" in catalog.get(model_id).family.selects


class StoredPictures:
    """The asset of each picture selected in recently, by its bytes' digest (bounded, oldest out)."""

    def __init__(self):
        self._ids: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def image_of(self, store, data: bytes) -> tuple[str | bytes, bytes]:
        """What the segment request's picture is for `data`: its asset id when stored before, else the file itself
        (stored by the engine), and the digest to remember its asset by."""
        digest = hashlib.sha256(data).digest()
        with self._lock:
            asset_id = self._ids.get(digest)
        if asset_id is not None and store.exists(asset_id):
            return asset_id, digest
        return data, digest

    def remember(self, digest: bytes, asset_id: str) -> None:
        with self._lock:
            self._ids[digest] = asset_id
            self._ids.move_to_end(digest)
            while len(self._ids) > STORED_PICTURES:
                self._ids.popitem(last=False)


_STORED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> its StoredPictures


def select(engine, picture, *, model_id, points=None, box=None, text=None) -> Segmented:
    """The selection in the studio's picture (a file the page uploaded, or a data URL) by the segment request's
    rules: raises RequestError naming its field. The file is read through the studio's guard; the engine decodes
    it under its pixel budget, as for a REST call."""
    if picture is None:
        raise RequestError("image", "upload or paste a picture first")
    data = upload_bytes(picture, field="image")
    stored = _STORED.setdefault(engine, StoredPictures())
    image, digest = stored.image_of(engine.store, data)
    body = {"modelId": model_id, "points": [] if points is None else points}
    if box is not None:
        body["box"] = box
    if text is not None:
        body["text"] = text
    if isinstance(image, str):
        body["image"] = image  # stored before: its asset id
    selected = segment(engine, body, image=image if isinstance(image, bytes) else None)
    stored.remember(digest, selected.image_id)
    return selected


def plain(exc: RequestError) -> str:
    return f"{FIELD_WORDS.get(exc.field.split('.')[0], exc.field)}: {exc.message}"


def answer(selected: Segmented) -> dict:
    """What select.js lands: the mask as the painter's paint, and the words under the toolbar."""
    histogram = selected.mask.histogram()
    share = sum(histogram[128:]) / max(1, selected.mask.width * selected.mask.height)
    score = f" · score {selected.score:.2f}" if selected.score is not None else ""
    return {"layer": imageops.to_data_url(layer_from_mask(selected.mask)),
            "said": f"Selected {share:.0%} of the picture with {selected.model_id}{score}. {SELECT_HINT}"}


def select_on_page(studio, values: dict) -> dict:
    """A gesture of the Select tool: the selector's value is its request (every click and the box so far); the
    answer, an error as words (the page keeps what was selected before), goes to the selection, which select.js
    lands in the painter."""
    ui = studio.ui
    request = values[ui.selector] if isinstance(values[ui.selector], dict) else {}
    try:
        selected = select(studio.engine, values[ui.picture], model_id=values[ui.select_model],
                          points=request.get("points"), box=request.get("box"))
        said = answer(selected)
    except RequestError as exc:
        said = {"error": plain(exc)}
    return {ui.selection: {"request": request, "answer": said}}


def select_by_text(studio, values: dict) -> dict:
    """The "Select" text box of a text model: every instance of what it names, as a new selection."""
    ui = studio.ui
    text = (values[ui.select_text] or "").strip() or None
    request = {"id": "text", "text": text}  # always landed: a text starts a new selection
    try:
        said = answer(select(studio.engine, values[ui.picture], model_id=values[ui.select_model], text=text))
    except RequestError as exc:
        said = {"error": plain(exc)}
    return {ui.selection: {"request": request, "answer": said}}


def follow_selector(studio, model_id: str | None) -> dict:
    """The text box is there for the models that read a text."""
    return gr.update(visible=reads_text(studio.catalog, model_id))


def segment_api(studio, image, points: list | None = None, box: list | None = None, text: str | None = None,
                modelId: str | None = None) -> tuple[str, float | None]:  # noqa: N803 (the contract's name)
    """Select an object in `image` (a file) by clicks (`points`: [{"x", "y", "label": 1 adds, 0 removes}]), a `box`
    ([left, top, right, bottom]) or a `text`, with `modelId` (a model that selects: grabcut, SAM...), as POST
    /segment does. Answers the mask (a PNG, white = selected, the picture's size) and the model's score (None
    for GrabCut)."""
    try:
        text = (text.strip() or None) if isinstance(text, str) else text  # an empty box of gradio_client's
        selected = select(studio.engine, image, model_id=modelId or best_selector(studio.catalog), points=points,
                          box=box, text=text)
    except RequestError as exc:
        raise gr.Error(f"{exc.field}: {exc.message}", title="Please check") from None
    path = Path(studio.files_dir) / "masks" / f"selection-{selected.mask_id}.png"
    path.parent.mkdir(exist_ok=True)
    selected.mask.save(path)
    return str(path), selected.score
