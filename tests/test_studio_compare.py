"""The studio's "Compare settings" panel: a run per value of one field, drawn as one labelled contact sheet in the
gallery; bad values refused before anything runs, naming the field and the rule; Stop skips the rest."""

import shutil
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from bench import photos
from inpaint import imageops, ui
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.generate import Engine
from inpaint.sheet import TILE_PX
from inpaint.ui import compare, fields, uploads

SIDE = 128
BOX = (40, 40, 88, 88)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, pipeline_cache):
    """The studio around an engine of its own (demo.studio.engine)."""
    store = AssetStore(tmp_path_factory.mktemp("compare-store"))
    return ui.build_demo(Engine(Catalog.load(), store, pipeline_cache), default_model="opencv-telea")


@pytest.fixture(scope="module")
def picture():
    """A real photograph (a cat), in the folder Gradio uploads to."""
    folder = Path(tempfile.mkdtemp(prefix="compare-", dir=uploads.upload_folder()))
    photos.crop("chelsea", SIDE).save(folder / "cat.png")
    yield str(folder / "cat.png")
    shutil.rmtree(folder, ignore_errors=True)


def page(demo, picture, field: str, listed: str, **given) -> dict:
    """The page's values as the panel's Generate sends them: a picture with a painted square, the model's
    defaults, and the panel's field and values."""
    studio = demo.studio
    layer = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    layer.paste((255, 45, 85, 255), BOX)
    values = {studio.ui[f.component]: f.default for f in fields.FIELDS}
    params = {"image": picture, "sketch": imageops.to_data_url(layer), "prompt": "grass", "modelId": "opencv-telea",
              "numSamples": 4, "seed": 5, **given}
    values.update({studio.ui[f.component]: params[f.param] for f in fields.FIELDS if f.param in params})
    values.update({studio.ui.session: {}, studio.ui.compare_field: field, studio.ui.compare_values: listed})
    return values


def run(demo, values, session="compare-1") -> list[dict]:
    return list(compare.compare(demo.studio, values, SimpleNamespace(session_hash=session)))


def test_a_value_per_cell_on_one_labelled_sheet(demo, picture):
    ui_ = demo.studio.ui
    updates = run(demo, page(demo, picture, "modelId", "opencv-telea, opencv-ns, patchmatch"))
    last = updates[-1]
    cells = last[ui_.params]["cells"]
    assert [line["cell"] for line in cells] == [{"modelId": m} for m in ("opencv-telea", "opencv-ns", "patchmatch")]
    assert [line["status"] for line in cells] == ["success"] * 3
    assert [line["input"]["modelId"] for line in cells] == ["opencv-telea", "opencv-ns", "patchmatch"]
    assert all(len(line["files"]) == 1 for line in cells)  # one result per cell, whatever Samples says
    assert last[ui_.status].startswith("**Done** · Model: opencv-telea, opencv-ns, patchmatch · 3 of 3 succeeded")
    [(sheet_path, caption)] = last[ui_.gallery]
    assert caption == "Model: opencv-telea, opencv-ns, patchmatch"
    assert last[ui_.download] == sheet_path
    with Image.open(sheet_path) as sheet:
        assert sheet.width > 3 * TILE_PX and sheet.height > TILE_PX  # three cells side by side, labels above
        sheet_np = np.asarray(sheet.convert("RGB"))
    # The first cell is the first result, scaled into its tile: its kept corner is the photograph's.
    with Image.open(Path(sheet_path).parent / cells[0]["files"][0]) as first:
        assert first.size == (SIDE, SIDE)
    assert (sheet_np < 60).any()  # the labels' ink
    # The sheet grows as the cells end: one drawn per cell, then the last.
    assert sum(ui_.gallery in update for update in updates) == 4


def test_the_seed_is_shared_unless_it_is_what_varies(demo, picture):
    ui_ = demo.studio.ui
    strengths = run(demo, page(demo, picture, "strength", "0.5, 0.9", randomizeSeed=True,
                               modelId="opencv-telea"))[-1][ui_.params]["cells"]
    assert len({line["input"]["seed"] for line in strengths}) == 1
    seeds = run(demo, page(demo, picture, "seed", "1, 2"))[-1][ui_.params]["cells"]
    assert [line["input"]["seed"] for line in seeds] == [1, 2]


@pytest.mark.parametrize("field, listed, said", [
    ("strength", "0.5, 2", "Compare settings: Strength: '2': Input should be less than or equal to 1"),
    ("strength", "0.5, high", "Compare settings: Strength: 'high': Input should be a valid number"),
    ("numInferenceSteps", "10, 10", "Compare settings: Steps: '10, 10' lists a value twice"),
    ("modelId", "opencv-telea, nope", "Compare settings: Model: 'nope': unknown model 'nope'"),
    ("strength", "  ", "Compare settings: Strength: type the values to compare"),
    (None, "0.5", "Compare settings: pick a field to compare"),
    ("seed", ", ".join(str(n) for n in range(compare.MAX_VALUES + 1)), "compare at most 12 at once"),
])
def test_bad_values_are_refused_before_anything_runs(demo, picture, field, listed, said):
    engine = demo.studio.engine
    before = engine.store.list(include_hidden=True)
    with pytest.raises(gr.Error) as refused:
        run(demo, page(demo, picture, field, listed))
    assert said in refused.value.message
    assert engine.store.list(include_hidden=True) == before  # nothing ran, nothing was stored


def test_a_bad_page_is_refused_in_the_pages_words(demo, picture):
    values = page(demo, picture, "strength", "0.5, 0.7")
    values[demo.studio.ui.painter] = ""
    with pytest.raises(gr.Error) as refused:
        run(demo, values)
    assert refused.value.message.startswith("Compare settings: Mask: nothing is painted")


def test_stop_ends_the_comparison_and_skips_the_rest(demo, picture):
    studio = demo.studio
    session = "compare-stop"
    updates = compare.compare(studio, page(demo, picture, "modelId", "opencv-telea, opencv-ns, patchmatch"),
                              SimpleNamespace(session_hash=session))
    first = next(updates)  # the first cell is about to run
    assert first[studio.ui.status].startswith("**Comparing**")
    threading.Thread(target=studio.running[session].set).start()  # the page's Stop
    cells = list(updates)[-1][studio.ui.params]["cells"]
    assert [line["status"] for line in cells][1:] == ["canceled", "canceled"]
    assert session not in studio.running
