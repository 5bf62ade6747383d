"""The studio's Select tool on the server side (the page's gesture handler, one stored picture per picture) and its
public API, `/segment`, through the real gradio_client against the app on loopback."""

import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from bench import photos
from inpaint import imageops, ui
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from inpaint.ui import selection, uploads

SIDE = 256


@pytest.fixture(scope="module")
def demo(tmp_path_factory, pipeline_cache):
    """The studio around an engine of its own (demo.studio.engine)."""
    store = AssetStore(tmp_path_factory.mktemp("select-store"))
    return ui.build_demo(Engine(Catalog.load(), store, pipeline_cache), default_model="opencv-telea")


@pytest.fixture(scope="module")
def client(demo):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def scene():
    """A real photograph with an object pasted on it (its exact mask known), in the folder Gradio uploads to: a
    cat's fur on a brick wall; a click at the object's deepest point, and its bounding box."""
    import cv2

    picture, truth = photos.composite(*photos.COMPOSITES[0], SIDE, np.random.default_rng(3))
    truth_np = np.asarray(truth) > 0
    folder = Path(tempfile.mkdtemp(prefix="select-", dir=uploads.upload_folder()))
    picture.save(folder / "scene.png")
    distance = cv2.distanceTransform(truth_np.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(distance.argmax(), distance.shape)
    ys, xs = np.nonzero(truth_np)
    yield {"path": str(folder / "scene.png"), "truth": truth_np, "click": (int(x), int(y)),
           "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
    shutil.rmtree(folder, ignore_errors=True)


def iou(mask_np: np.ndarray, truth_np: np.ndarray) -> float:
    return float((mask_np & truth_np).sum() / (mask_np | truth_np).sum())


def gesture(demo, scene, request: dict, model: str = "grabcut") -> dict:
    """The page's gesture handler, as the selector's change calls it; the selection's new value."""
    studio = demo.studio
    out = selection.select_on_page(studio, {studio.ui.picture: scene["path"], studio.ui.selector: request,
                                            studio.ui.select_model: model})
    return out[studio.ui.selection]


def test_a_click_on_the_page_selects_the_object_as_paint(demo, scene):
    x, y = scene["click"]
    value = gesture(demo, scene, {"id": "click-1", "points": [{"x": x, "y": y, "label": 1}], "box": None})
    assert value["request"]["id"] == "click-1"
    layer = imageops.open_image(imageops.decode_data_url(value["answer"]["layer"], field="layer"), field="layer")
    assert layer.size == (SIDE, SIDE) and layer.mode == "RGBA"
    painted_np = np.asarray(layer.getchannel("A")) > 0  # the painter's paint: opaque where selected
    assert iou(painted_np, scene["truth"]) > 0.8
    assert "Selected" in value["answer"]["said"] and "grabcut" in value["answer"]["said"]


def test_a_negative_click_and_a_box_refine_the_selection(demo, scene):
    x, y = scene["click"]
    both = gesture(demo, scene, {"id": "click-2", "points": [{"x": x, "y": y, "label": 1}], "box": scene["box"]})
    painted_np = np.asarray(imageops.open_image(imageops.decode_data_url(both["answer"]["layer"], field="layer"),
                                                field="layer").getchannel("A")) > 0
    assert iou(painted_np, scene["truth"]) > 0.8
    only_negative = gesture(demo, scene, {"id": "click-3", "points": [{"x": x, "y": y, "label": 0}], "box": None})
    assert only_negative["answer"] == {"error": "Select: nothing to select by: 'grabcut' needs a box or a positive "
                                                "point (label 1)"}


def test_the_page_says_what_is_wrong_in_its_own_words(demo, scene):
    outside = gesture(demo, scene, {"id": "click-4", "points": [{"x": SIDE + 5, "y": 3, "label": 1}], "box": None})
    assert outside["answer"]["error"].startswith("Select: point 0 (261, 3) is outside the 256x256 picture")
    studio = demo.studio
    no_picture = selection.select_on_page(studio, {studio.ui.picture: None, studio.ui.select_model: "grabcut",
                                                   studio.ui.selector: {"id": "click-5", "points": []}})
    assert no_picture[studio.ui.selection]["answer"] == {"error": "Picture: upload or paste a picture first"}
    # A file the page did not upload is not read, whatever the gesture.
    for gesture_value in (None, {"id": "click-6", "points": [{"x": 3, "y": 3, "label": 1}]}):
        refused = selection.select_on_page(studio, {studio.ui.picture: __file__, studio.ui.select_model: "grabcut",
                                                    studio.ui.selector: gesture_value})
        assert refused[studio.ui.selection]["answer"] == {
            "error": "Picture: is not a file this page uploaded: upload it again"}
    by_text = selection.select_by_text(studio, {studio.ui.picture: scene["path"], studio.ui.select_text: "the cat",
                                                studio.ui.select_model: "grabcut"})
    assert by_text[studio.ui.selection]["answer"]["error"].startswith("Select (text): 'grabcut' does not read text")


def test_each_picture_is_stored_once_for_its_selections(demo, scene):
    engine = demo.studio.engine
    x, y = scene["click"]
    gesture(demo, scene, {"id": "click-6", "points": [{"x": x, "y": y, "label": 1}], "box": None})
    pictures = [a for a in engine.store.list(include_hidden=True) if a.parent_id is None]
    gesture(demo, scene, {"id": "click-7", "points": [{"x": x, "y": y, "label": 1}, {"x": 3, "y": 3, "label": 0}],
                          "box": None})
    assert [a for a in engine.store.list(include_hidden=True) if a.parent_id is None] == pictures


def test_the_model_picker_defaults_to_the_best_offline_selector():
    catalog = Catalog.load()
    assert selection.best_selector(catalog) == "grabcut"  # no SAM weights here; random-weight models never
    assert all(catalog.get(model_id).family.selects for _, model_id in selection.selector_choices(catalog))
    assert selection.reads_text(catalog, "tiny-sam3") and not selection.reads_text(catalog, "grabcut")


def test_segment_through_gradio_client(client, scene):
    x, y = scene["click"]
    mask_path, score = client.predict(handle_file(scene["path"]), [{"x": x, "y": y, "label": 1}], None, "", "grabcut",
                                      api_name="/segment")
    with Image.open(mask_path) as mask:
        assert mask.size == (SIDE, SIDE)
        assert iou(np.asarray(mask.convert("L")) > 127, scene["truth"]) > 0.8
    assert score is None  # GrabCut scores nothing
    # A box alone, and the model left out: the best one available.
    mask_path, _ = client.predict(image=handle_file(scene["path"]), box=scene["box"], api_name="/segment")
    with Image.open(mask_path) as mask:
        assert iou(np.asarray(mask.convert("L")) > 127, scene["truth"]) > 0.8


def test_segment_through_gradio_client_with_a_tiny_sam(client, scene):
    x, y = scene["click"]
    mask_path, score = client.predict(handle_file(scene["path"]), [{"x": x, "y": y, "label": 1}], None, None,
                                      "tiny-sam2", api_name="/segment")
    with Image.open(mask_path) as mask:
        assert mask.size == (SIDE, SIDE)  # random weights select noise, at the picture's size
    assert isinstance(score, float)


@pytest.mark.parametrize("given, said", [
    ({"points": [{"x": 300, "y": 3, "label": 1}]}, "points: point 0 (300, 3) is outside the 256x256 picture"),
    ({"points": [{"x": 3, "y": 3, "label": 0}]}, "points: nothing to select by"),
    ({"points": [{"x": 3, "label": 1}]}, "points.0.y: Field required"),
    ({"box": [10, 10, 5, 20]}, "box: [10, 10, 5, 20] must have left < right and top < bottom"),
    ({"text": "the cat"}, "text: 'grabcut' does not read text"),
    ({"box": [0, 0, 9, 9], "modelId": "opencv-telea"}, "modelId: 'opencv-telea' inpaints and selects nothing"),
    ({"box": [0, 0, 9, 9], "modelId": "no-such-model"}, "modelId: unknown model id 'no-such-model'"),
    ({"box": [0, 0, 9, 9], "image": None}, "image: upload or paste a picture first"),
])
def test_segment_refuses_bad_input_naming_the_field(client, scene, given, said):
    args = {"image": handle_file(scene["path"]), "modelId": "grabcut", **given}
    with pytest.raises(AppError) as refused:
        client.predict(**args, api_name="/segment")
    assert said in str(refused.value)
