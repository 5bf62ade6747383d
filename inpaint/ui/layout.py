"""The studio's page: every component, created once and returned by name. No behaviour here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..catalog import Catalog
from ..schema import DEFAULT_STEPS, DEFAULT_STRENGTH, OUTPAINT_MAX_PX
from .fields import (
    COMPARED,
    CONCEPT_HEADERS,
    OUTPAINT_SIDES,
    PROMPT_HINT,
    VALUES_HINT,
    concept_choices,
    model_info,
    model_label,
)
from .masks import MASK_OVERLAY_RGB
from .selection import SELECT_HINT, best_selector, reads_text, selector_choices

# The photo should fill its box, not sit at 60% of it; and with the painter's tools, the prompt and Generate under
# it, fit a laptop's screen (1440x900) without scrolling.
PICTURE_HEIGHT_PX = 340

# Gradio 6 takes theme and CSS at launch/mount time: the server passes these along with the Blocks.
# System fonts: a self-hosted studio must not wait on a font CDN it may not reach.
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="rose",
                       font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#inpaint-status p, #inpaint-reason p { margin: 0; }
#inpaint-reason { min-height: 1.4em; color: var(--body-text-color-subdued); }
#inpaint-intro p { margin: 0; }
#inpaint-intro strong { font-size: var(--text-xl); }
/* Captions in full ("seed 1234567890"), and whole images: a portrait's edited corner is what matters. An earlier
   run's caption stays on one line: wrapped, it covered the thumbnail. */
#inpaint-gallery .caption-label { white-space: normal; overflow: visible; }
#inpaint-history .caption-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 100%; }
#inpaint-gallery img, #inpaint-history img { object-fit: contain !important; }
#inpaint-model input { text-overflow: clip; }
/* The painter (painter.js): its canvas over the picture, see-through, so what is under the paint shows. */
#inpaint-mask-canvas { position: absolute; opacity: 0.5; touch-action: none; cursor: none; z-index: 1; }
#inpaint-brush-ring { position: absolute; display: none; pointer-events: none; z-index: 2; border-radius: 50%;
                      border: 1px solid #fff; box-shadow: 0 0 0 1px rgba(0, 0, 0, 0.6); }
#inpaint-painter .inpaint-tools { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
#inpaint-painter button { padding: 2px 8px; border-radius: var(--radius-sm); border: 1px solid var(--border-color-primary);
                          background: var(--button-secondary-background-fill); color: var(--body-text-color); }
#inpaint-painter button[aria-pressed=true] { background: var(--color-accent-soft); border-color: var(--color-accent); }
#inpaint-painter label { display: flex; gap: 4px; align-items: center; }
#inpaint-painter input[type=range] { width: 80px; }
#inpaint-painter button:disabled { opacity: 0.5; }
#inpaint-painter output { min-width: 2.2em; font-variant-numeric: tabular-nums; }
/* A phone: a shorter picture box (a landscape photo letterboxed in 560 px is mostly empty), tools on two lines. */
@media (max-width: 640px) {
  #inpaint-picture { height: 380px !important; }
  #inpaint-painter button { padding: 2px 5px; }
  #inpaint-painter input[type=range] { width: 48px; }
}
/* What the model does not read looks switched off, not only refuses input. */
textarea:disabled, input:disabled { opacity: 0.5; cursor: not-allowed; }
input[type=range]:disabled { filter: grayscale(1); }
/* The comparison's sides named on the pictures (the input on the left, the result on the right), at the bottom:
   the component's label and buttons cover its top. */
#inpaint-compare .slider-wrap .wrap { position: relative; }
#inpaint-compare .slider-wrap .wrap::before, #inpaint-compare .slider-wrap .wrap::after {
  position: absolute; bottom: 6px; z-index: 3; padding: 1px 8px; border-radius: var(--radius-sm); pointer-events: none;
  background: rgba(0, 0, 0, 0.6); color: #fff; font-size: var(--text-sm); }
#inpaint-compare .slider-wrap .wrap::before { content: "Before"; left: 6px; }
#inpaint-compare .slider-wrap .wrap::after { content: "After"; right: 6px; }
#inpaint-model-about p { margin: 0; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
#inpaint-model ul.options { min-width: 100%; width: max-content; max-width: 90vw; }
/* A streaming output keeps gradio's accent border, not its endless pulse: repainted every frame by a browser
   without a GPU, it competes with the run for the CPU the whole time (the status line says the run goes on). */
.generating { animation: none !important; }
""" + """
/* The Select tool (select.js): its model, text box and status line, shown while it is chosen; the box being drawn. */
#inpaint-select-row, #inpaint-selector { display: none; }
.inpaint-select-status { margin: 0; color: var(--body-text-color-subdued); }
.inpaint-select-status[data-busy=true]::before { content: ""; display: inline-block; width: 0.8em; height: 0.8em;
  margin-right: 6px; vertical-align: -1px; border: 2px solid var(--color-accent); border-right-color: transparent;
  border-radius: 50%; animation: inpaint-spin 0.8s linear infinite; }
@keyframes inpaint-spin { to { transform: rotate(360deg); } }
#inpaint-select-box { position: absolute; display: none; pointer-events: none; z-index: 2;
                      border: 2px dashed #fff; box-shadow: 0 0 0 1px rgba(0, 0, 0, 0.6); }
"""


BRUSH_SIZE = 32  # on screen, in pixels: what the ring under the pointer shows
BRUSH_STEP = 4  # "[" and "]": a few pixels a press, as in IOPaint
ORIGINAL_KEY = "o"  # held: the picture without the mask ("o" for original; Space pans and Tab moves focus)
BRUSH_COLOUR = "#{:02x}{:02x}{:02x}".format(*MASK_OVERLAY_RGB)  # the preview tints with it too

# The painter's toolbar; painter.js lays its canvas over the picture and works the buttons.
PAINTER_HTML = f"""<div class="inpaint-tools" role="toolbar" aria-label="Mask painting">
  <button type="button" data-tool="brush" aria-pressed="true" title="Paint what should change">Brush</button>
  <button type="button" data-tool="eraser" aria-pressed="false" title="Take paint away">Eraser</button>
  <button type="button" data-tool="select" aria-pressed="false"
    title="Click an object to select it (Alt-click or right-click removes, drag a box)">Select</button>
  <label title="Brush size ([ and ])">Size <input type="range" min="4" max="200" value="{BRUSH_SIZE}"
    aria-label="Brush size"><output>{BRUSH_SIZE}</output></label>
  <button type="button" data-action="undo" title="Undo (Ctrl+Z)">Undo</button>
  <button type="button" data-action="redo" title="Redo (Ctrl+Shift+Z)">Redo</button>
  <button type="button" data-action="clear" title="Remove all paint">Clear</button>
  <button type="button" data-action="original" title="Hold to see the picture without the mask (or hold O)">Original</button>
  <button type="button" data-action="fit" disabled title="Show the whole picture (or double-click it). The wheel or two
    fingers zoom, Space+drag or the middle button pans">Fit</button>
</div>"""
# zoom.js (zoom and pan) comes after the painter, in its scope: it moves the painter's canvas with the picture.
PAINTER_JS = ("\n".join((Path(__file__).parent / name).read_text() for name in ("painter.js", "zoom.js"))
              .replace("BRUSH_STEP", str(BRUSH_STEP)).replace("ORIGINAL_KEY", f'"{ORIGINAL_KEY}"')
              .replace("BRUSH_COLOUR", f'"{BRUSH_COLOUR}"'))
# The Select tool (select.js, kept apart from the painter's own code): its status line under the toolbar.
SELECTOR_HTML = f"""<p class="inpaint-select-status" role="status" aria-live="polite">{SELECT_HINT}</p>"""
SELECT_JS = (Path(__file__).parent / "select.js").read_text()
SELECTION_LANDS_JS = "(value) => { window.inpaintSelect && window.inpaintSelect.land(value); }"
# A mask the server sets (an example's, an imported file's, none for a new picture) reaches the canvas.
PAINTER_LOAD_JS = "(value) => { window.inpaintPainter && window.inpaintPainter.load(value); }"


class Layout(SimpleNamespace):
    """The page's components by name (`layout.prompt`, or `layout["prompt"]` from the fields table)."""

    def __getitem__(self, name: str) -> gr.components.Component:
        return getattr(self, name)


def optional(slider: gr.Slider) -> gr.Slider:
    """Let an API caller leave `slider` out (None): the engine then applies the model's own default.
    (Wrapped on the instance: a gr.Slider subclass would make gradio write a type stub next to this file.)"""
    preprocess, postprocess = slider.preprocess, slider.postprocess
    slider.preprocess = lambda payload: None if payload is None else preprocess(payload)
    slider.postprocess = lambda value: None if value is None else postprocess(value)
    slider.value = None  # the slider starts at "the model's default"; the page sets its own value on load
    return slider


def _widest(ranges) -> tuple[float, float]:
    ranges = list(ranges)
    return min(r.low for r in ranges), max(r.high for r in ranges)


def build_layout(catalog: Catalog, default_id: str, deliver_files) -> Layout:
    """Every component of the page, inside the caller's Blocks. Server-side slider bounds are the widest of
    the catalog, so the engine (not the slider) judges a value; the page narrows them to the chosen model."""
    default = catalog.get(default_id)
    guidance_bounds = _widest(e.guidance_range for e in catalog.entries())
    size_bounds = _widest(e.size_range for e in catalog.entries())
    concepts_now = concept_choices(catalog, default, None)

    gr.Markdown("**inpaint studio** · Upload or paste a picture, paint over what should change, say what to paint "
                "there, generate.", elem_id="inpaint-intro")
    # Folded: open, the examples' table pushes Generate below the fold of a laptop's screen.
    ui = Layout(examples_box=gr.Accordion("Examples: a picture, its mask and a model, ready to generate", open=False,
                                          elem_id="inpaint-examples-box"),
                session=gr.State({"source": None, "input": None, "results": [], "selected": None, "history": []}),
                image_size=gr.State(None), chosen=gr.State({}), busy=gr.State(False))
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            # A one-word label: the image's toolbar sits over a longer one on a phone.
            ui.picture = deliver_files(gr.Image(label="Picture", type="filepath", image_mode=None,
                                                sources=["upload", "clipboard"], height=PICTURE_HEIGHT_PX,
                                                buttons=[], elem_id="inpaint-picture"))
            # Its value is the painted mask as a PNG data URL ("" before a stroke); painter.js draws it.
            ui.painter = gr.HTML("", label="Painted mask", html_template=PAINTER_HTML, js_on_load=PAINTER_JS,
                                 apply_default_css=False, elem_id="inpaint-painter")
            build_select_row(ui, catalog)
            # The model right above the prompt it reads (its placeholder says whether it reads one).
            # The models that paint (those that select objects have no place in a run).
            ui.model = gr.Dropdown(choices=[(model_label(e), e.id) for e in catalog.entries() if not e.family.selects],
                                   value=default_id, label="Model", allow_custom_value=True, elem_id="inpaint-model")
            ui.prompt = gr.Textbox(label="Prompt", lines=2, placeholder=PROMPT_HINT, elem_id="inpaint-prompt")
            with gr.Row():
                # Greyed until there is a picture and something to repaint (the line under it says what is missing).
                ui.generate_btn = gr.Button("Generate", variant="primary", scale=3, min_width=100, interactive=False,
                                            elem_id="inpaint-generate")
                ui.stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="inpaint-stop")
            ui.reason = gr.Markdown("Upload or paste a picture to start.", elem_id="inpaint-reason")
            ui.status = gr.Markdown("Ready.", label="Status", min_height=48, elem_id="inpaint-status")
            with gr.Accordion("Mask", open=True):
                with gr.Row():
                    ui.mask_preview = gr.Image(label="Effective mask", interactive=False, height=160, buttons=[],
                                               elem_id="inpaint-mask-preview")
                    ui.mask_upload = deliver_files(gr.Image(
                        label="Mask file (white = repaint; becomes the painted mask)", type="filepath", image_mode=None,
                        sources=["upload", "clipboard"], height=160, elem_id="inpaint-mask-upload"))
                with gr.Row():
                    ui.grow = gr.Slider(0, 64, value=0, step=1, label="Grow (px)", min_width=120,
                                        elem_id="inpaint-grow")
                    ui.feather = gr.Slider(0, 32, value=0, step=1, label="Feather (px)", min_width=120,
                                           elem_id="inpaint-feather")
                with gr.Row():
                    ui.invert = gr.Checkbox(label="Invert (repaint everything but the paint)", value=False,
                                            elem_id="inpaint-invert")
                    ui.mask_download = gr.DownloadButton("Download mask", value=None, size="sm",
                                                         elem_id="inpaint-mask-download")
                ui.mask_mode = gr.Radio([("Hard edge", "binary"), ("Soft edge (feather blends)", "soft")],
                                        value=None, label="Mask edge", elem_id="inpaint-mask-mode")
            with gr.Accordion("Extend the picture (outpaint)", open=False, elem_id="inpaint-extend"):
                with gr.Row():
                    for side in OUTPAINT_SIDES:
                        setattr(ui, f"outpaint_{side}", gr.Number(0, label=f"{side.title()} (px)", minimum=0,
                                                                  maximum=OUTPAINT_MAX_PX, precision=0,
                                                                  min_width=70, elem_id=f"inpaint-outpaint-{side}"))
                with gr.Row():
                    ui.extend_buttons = {side: gr.Button(f"+25% {side}", size="sm", min_width=60,
                                                         elem_id=f"inpaint-extend-{side}") for side in OUTPAINT_SIDES}
                    ui.extend_reset = gr.Button("No extension", size="sm", min_width=60, elem_id="inpaint-extend-reset")

        with gr.Column(scale=5, min_width=340):
            ui.preview = gr.Image(label="Denoising preview", type="filepath", interactive=False, height=200,
                                  visible=False, buttons=[], elem_id="inpaint-preview")
            ui.gallery = gr.Gallery(label="Results", columns=2, height="auto", object_fit="contain", format="png",
                                    buttons=["download", "fullscreen"], elem_id="inpaint-gallery")
            with gr.Row():
                ui.use_input = gr.Button("Use as input", elem_id="inpaint-use-input")
                ui.download = gr.DownloadButton("Download PNG", value=None, elem_id="inpaint-download")
            ui.compare = gr.ImageSlider(label="Before / after (drag the divider)", type="filepath", interactive=False, max_height=400,
                                        elem_id="inpaint-compare")
            ui.params = gr.JSON(label="Parameters of the selected sample", elem_id="inpaint-params")
            ui.history = gr.Gallery(label="Earlier runs (click one to bring it back)", columns=6, height=120,
                                    object_fit="contain", allow_preview=False, buttons=[],
                                    elem_id="inpaint-history")

        with gr.Column(scale=3, min_width=280):
            # What the model beside the prompt is: its type and description (too long to sit beside it).
            ui.model_about = gr.Markdown(model_info(default), elem_id="inpaint-model-about")
            ui.negative_prompt = gr.Textbox(label="Negative prompt", lines=1, placeholder="What to avoid",
                                            elem_id="inpaint-negative-prompt")
            ui.num_samples = optional(gr.Slider(1, 128, step=1, label="Samples", elem_id="inpaint-samples"))
            ui.steps = gr.Slider(1, 150, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="inpaint-steps")
            ui.intermediate = gr.Checkbox(label="Show the denoising as it happens", value=False,
                                          elem_id="inpaint-intermediate")
            ui.disable_merging = gr.Checkbox(label="Regenerate the whole picture, not just around the mask",
                                             value=False, elem_id="inpaint-disable-merging")
            with gr.Accordion("Advanced", open=False, elem_id="inpaint-advanced"):
                ui.seed = gr.Number(label="Seed (the one used last)", value=None, precision=0, elem_id="inpaint-seed")
                ui.randomize = gr.Checkbox(label="Randomise seed", value=False, info="A new seed each run",
                                           elem_id="inpaint-randomize")
                ui.strength = gr.Slider(0.01, 1.0, value=DEFAULT_STRENGTH, step=0.01, label="Strength",
                                        info="How far from the picture the masked area may go",
                                        elem_id="inpaint-strength")
                ui.guidance = optional(gr.Slider(*guidance_bounds, step=0.1, label="Guidance",
                                                 elem_id="inpaint-guidance"))
                ui.scheduler = gr.Dropdown(choices=default.scheduler_names, value=None, label="Scheduler",
                                           allow_custom_value=True, elem_id="inpaint-scheduler")
                ui.color_match = gr.Dropdown([("Mean and spread (default)", "mean-std"), ("Histogram", "histogram"),
                                              ("None", "none")], value=None, label="Colour match",
                                             info="Matches the new area's colours to the pixels around it",
                                             elem_id="inpaint-color-match")
                ui.auto_size = gr.Checkbox(label="Auto size", value=False, elem_id="inpaint-auto-size",
                                           info="Whole picture: its own size. Otherwise: the model's native "
                                                "resolution around the mask.")
                ui.width = optional(gr.Slider(*size_bounds, step=8, label="Width", elem_id="inpaint-width"))
                ui.height = optional(gr.Slider(*size_bounds, step=8, label="Height", elem_id="inpaint-height"))
                ui.base_model = gr.Dropdown(choices=list(default.compliant_model_ids), value=None,
                                            label="Base model (LoRA models)", allow_custom_value=True,
                                            visible=default.type.is_lora)
                ui.model_epoch = gr.Dropdown(choices=list(default.epochs), value=None, label="Epoch (LoRA models)",
                                             allow_custom_value=True, visible=bool(default.epochs))
                ui.negative_strength = gr.Slider(0, 10, value=0, step=0.1, label="Negative prompt strength",
                                                 visible=default.family.negative_prompt_strength)
                with gr.Group(visible=bool(concepts_now)) as ui.concept_box:
                    with gr.Row(equal_height=True):
                        ui.concept_pick = gr.Dropdown(choices=concepts_now, value=None, label="LoRA concept",
                                                      scale=3, elem_id="inpaint-concept-pick")
                        ui.add_concept = gr.Button("Add", size="sm", scale=1, min_width=60,
                                                   elem_id="inpaint-add-concept")
                    ui.concepts = gr.Dataframe(value=[], headers=CONCEPT_HEADERS, datatype=["str", "number", "str"],
                                               type="array", column_count=3, label="Concepts (scale -2..2)",
                                               interactive=True, elem_id="inpaint-concepts")
                    ui.clear_concepts = gr.Button("Clear concepts", size="sm")
            build_compare_panel(ui)
    return ui


def build_select_row(ui: Layout, catalog: Catalog) -> None:
    """The Select tool's model, its text box (text models) and its status line, shown while the tool is chosen
    (select.js); the selector's value carries each gesture's request to the server, the selection its answer."""
    default = best_selector(catalog)
    with gr.Row(equal_height=True, elem_id="inpaint-select-row"):
        ui.select_model = gr.Dropdown(choices=selector_choices(catalog), value=default, label="Select with",
                                      allow_custom_value=True, scale=2, min_width=160, elem_id="inpaint-select-model")
        ui.select_text = gr.Textbox(label="Select", placeholder="What to select, in words: the cat, all cups",
                                    scale=3, min_width=160, visible=reads_text(catalog, default),
                                    elem_id="inpaint-select-text")
    ui.selector = gr.HTML(None, html_template=SELECTOR_HTML, js_on_load=SELECT_JS, apply_default_css=False,
                          elem_id="inpaint-selector")
    # The answer to a gesture, for select.js to land: in the page (so its change event runs), never seen.
    ui.selection = gr.HTML(None, html_template="", js_on_load=None, apply_default_css=False, visible="hidden",
                           elem_id="inpaint-selection")
    # The public /segment endpoint's own parameters and answers (never shown: the page speaks through the selector).
    ui.segment_points = gr.JSON(None, visible=False, label="points")
    ui.segment_box = gr.JSON(None, visible=False, label="box")
    ui.segment_mask = gr.Image(None, type="filepath", format="png", visible=False, label="mask")
    ui.segment_score = gr.Number(None, visible=False, label="score")


def build_compare_panel(ui: Layout) -> None:
    """Compare settings: one run per value of a field, drawn as one labelled sheet in the gallery."""
    with gr.Accordion("Compare settings", open=False, elem_id="inpaint-compare-settings"):
        ui.compare_field = gr.Dropdown(choices=list(COMPARED), value="strength", label="Field",
                                       elem_id="inpaint-compare-field")
        ui.compare_values = gr.Textbox(label="Values", placeholder="0.5, 0.7, 0.9", info=VALUES_HINT,
                                       elem_id="inpaint-compare-values")
        ui.compare_btn = gr.Button("Generate the comparison", elem_id="inpaint-compare-generate")
