"""build_demo: the page (layout), what it does (handlers), and the wiring between them."""

from __future__ import annotations

import functools
import inspect
import shutil
import tempfile
import typing
import weakref
from pathlib import Path

import gradio as gr

from .. import settings
from ..generate import Engine
from ..jobs import JobQueue
from . import compare, device, handlers, selection
from .examples import make_examples
from .fields import FIELDS, OUTPAINT_SIDES, api_function
from .handlers import KEEP_FILES_S, Studio
from .layout import PAINTER_LOAD_JS, SELECTION_LANDS_JS, build_layout
from .uploads import deliver_files


def bind(fn, studio: Studio, **fixed):
    """`fn(studio, ..., **fixed)` as the event function gradio inspects: the same parameters and hints (a
    gr.Request, a gr.SelectData), less `studio` and `fixed`."""
    signature = inspect.signature(fn)
    if inspect.isgeneratorfunction(fn):
        def call(*args, **kwargs):
            yield from fn(studio, *args, **fixed, **kwargs)
    else:
        def call(*args, **kwargs):
            return fn(studio, *args, **fixed, **kwargs)
    kept = [p for p in list(signature.parameters.values())[1:] if p.name not in fixed]
    call.__signature__ = signature.replace(parameters=kept)
    call.__annotations__ = {k: v for k, v in typing.get_type_hints(fn).items() if k in {p.name for p in kept}}
    call.__name__ = call.__qualname__ = fn.__name__
    return call


def build_demo(engine: Engine, *, default_model: str | None = None, max_queue: int = settings.MAX_QUEUE,
               jobs: JobQueue | None = None) -> gr.Blocks:
    """A new Blocks around `engine` (a factory: one Blocks per server, never shared). With `jobs`, the server's
    job queue, runs take their turn on its workers with the REST jobs, as many at once as it has workers.

    The components start at "let the engine decide" (no seed, no guidance, no size), so an API call that
    leaves a parameter out gets the contract's default for its model; the page's own friendly values (the
    model's guidance, a random seed each run, auto size) are set on load.
    """
    default_id = default_model if default_model in engine.catalog else settings.DEFAULT_MODEL
    default_id = default_id if default_id in engine.catalog else engine.catalog.ids[0]
    files_dir = Path(tempfile.mkdtemp(prefix="inpaint-ui-"))  # served copies: results, previews, examples
    engine_key = f"engine-{id(engine):x}"
    device.ENGINES[engine_key] = engine

    with gr.Blocks(title="inpaint studio", delete_cache=(3600, KEEP_FILES_S)) as demo:
        weakref.finalize(demo, shutil.rmtree, files_dir, True)
        ui = build_layout(engine.catalog, default_id, deliver_files)
        studio = Studio(engine, ui, files_dir, make_examples(files_dir / "examples", engine.catalog), engine_key, jobs)
        on = functools.partial(wire, studio)

        extension = [ui[f"outpaint_{side}"] for side in OUTPAINT_SIDES]
        mask = {ui.picture, ui.painter, ui.mask_upload, ui.invert, ui.grow, ui.feather, ui.mask_mode, ui.model,
                ui.busy, *extension}
        mask_shown = [ui.mask_preview, ui.mask_download, ui.image_size, ui.reason, ui.generate_btn]
        # The painter's value changes once a stroke (at its end, painter.js) and when the server sets it.
        for changed in (ui.picture, ui.painter, ui.mask_upload, ui.invert, ui.grow, ui.feather, ui.mask_mode,
                        ui.model, *extension):
            on(changed.change, handlers.show_mask, mask, mask_shown, trigger_mode="always_last")
        ui.painter.change(None, ui.painter, None, js=PAINTER_LOAD_JS, **PRIVATE)
        with ui.examples_box:
            examples = gr.Dataset(components=[gr.Image(visible=False), gr.Textbox(visible=False)], type="index",
                                  samples=[[str(e["image"]), e["label"]] for e in studio.examples],
                                  label="Examples: a picture and its mask, ready to generate", elem_id="inpaint-examples")
        on(examples.click, handlers.load_example, examples, [ui.picture, ui.painter, ui.mask_upload, ui.prompt, ui.model])
        for side, button in ui.extend_buttons.items():
            button.click(bind(handlers.extend, studio, side=side), {ui.image_size, *extension}, extension, **PRIVATE)
        on(ui.extend_reset.click, handlers.no_extension, None, extension)
        on(ui.mask_upload.upload, handlers.import_mask, {ui.picture, ui.mask_upload}, [ui.painter, ui.mask_upload])
        for new_picture in (ui.picture.upload, ui.picture.clear):
            on(new_picture, handlers.follow_image, {ui.picture, ui.model},
               [ui.width, ui.height, ui.image_size, ui.painter, ui.picture, ui.status])

        follows = {ui.model, ui.image_size, ui.chosen, ui.busy, ui.base_model, ui.auto_size, ui.concepts}
        followed = [ui[name] for name in FOLLOWED]
        on(ui.model.change, handlers.follow_model, follows, followed)
        on(demo.load, handlers.page_defaults, follows, [*followed, ui.randomize, ui.mask_mode, ui.color_match])
        for name in handlers.CHOICES:  # by hand only: the values follow_model sets are not the user's
            ui[name].input(bind(handlers.remember, studio, name=name), {ui[name], ui.chosen}, ui.chosen, queue=False,
                           **PRIVATE)
        on(ui.base_model.change, handlers.follow_base, {ui.model, ui.base_model, ui.concepts},
           [ui.concept_pick, ui.concept_box, ui.concepts])
        ui.auto_size.change(lambda auto: (gr.update(interactive=not auto),) * 2, ui.auto_size, [ui.width, ui.height],
                            **PRIVATE)
        ui.intermediate.change(lambda shown: gr.update(visible=shown), ui.intermediate, ui.preview, **PRIVATE)
        on(ui.add_concept.click, handlers.add_concept_row, {ui.concepts, ui.concept_pick}, ui.concepts)
        ui.clear_concepts.click(list, None, ui.concepts, **PRIVATE)

        # A run: Generate goes grey and the status speaks at once (no queue), then the run streams, then
        # whatever its end, Generate is live again if nothing is missing. Only the run itself is public API.
        run = gr.on([ui.generate_btn.click], bind(handlers.start, studio), {ui.busy},
                    [ui.generate_btn, ui.reason, ui.status, ui.busy], queue=False, **PRIVATE)
        run = run.then(api_function(functools.partial(handlers.generate, studio)),
                       [ui[f.component] for f in FIELDS] + [ui.session],
                       [ui.gallery, ui.preview, ui.status, ui.params, ui.seed, ui.session], api_name="inpaint",
                       show_progress="hidden", concurrency_limit=len(jobs.workers) if jobs else 1,
                       concurrency_id="inpaint-device")
        # `.then` is meant to follow a failed run too, but gradio's page only follows a failure with `.failure`.
        finished = [ui.busy, ui.status, ui.history, ui.compare, ui.download, ui.params, ui.session]
        for after in (run.then, run.failure):
            ended = on(after, handlers.finish, {ui.session, ui.status}, finished)
            ended.then(bind(handlers.show_mask, studio), mask, mask_shown, **PRIVATE)
            ended.then(None, js=RESULTS_INTO_VIEW_JS, **PRIVATE)
        # The run ends itself within a step and keeps what it made; a queue-level cancel would abandon its
        # handler mid-stream (the page then shows an error and briefly ignores the next Generate).
        ui.stop_btn.click(bind(handlers.stop, studio), None, ui.status, queue=False, **PRIVATE)
        select_outputs = [ui.compare, ui.download, ui.params, ui.session]
        on(ui.gallery.select, handlers.select_result, {ui.session}, select_outputs)
        on(ui.history.select, handlers.bring_back, {ui.session}, [ui.gallery, *select_outputs])
        on(ui.use_input.click, handlers.keep_editing, {ui.session},
           [ui.picture, ui.painter, ui.mask_upload, ui.mask_preview, ui.session])

        # The Select tool: select.js puts each gesture's request in the selector's value, and lands the answer
        # the selection receives. /segment is the same selection for API callers (no page event: its parameters
        # are never shown).
        on(ui.selector.change, selection.select_on_page, {ui.picture, ui.selector, ui.select_model}, ui.selection,
           trigger_mode="always_last", concurrency_id="inpaint-select", concurrency_limit=SELECTIONS_AT_ONCE)
        on(ui.select_text.submit, selection.select_by_text, {ui.picture, ui.select_text, ui.select_model},
           ui.selection, concurrency_id="inpaint-select", show_progress="minimal")
        ui.selection.change(None, ui.selection, None, js=SELECTION_LANDS_JS, **PRIVATE)
        ui.select_model.change(bind(selection.follow_selector, studio), ui.select_model, ui.select_text, **PRIVATE)
        gr.on([], bind(selection.segment_api, studio),
              [ui.picture, ui.segment_points, ui.segment_box, ui.select_text, ui.select_model],
              [ui.segment_mask, ui.segment_score], api_name="segment", concurrency_id="inpaint-select")
        # Compare settings: a run per value, each its own job, as many at once as runs.
        on(ui.compare_btn.click, compare.compare,
           {*(ui[f.component] for f in FIELDS), ui.session, ui.compare_field, ui.compare_values},
           [ui.gallery, ui.download, ui.status, ui.params], concurrency_id="inpaint-device",
           concurrency_limit=len(jobs.workers) if jobs else 1)

    demo.studio = studio  # its components by name, for tests and for code that extends the page
    demo.queue(max_size=max_queue, default_concurrency_limit=4)
    return demo


PRIVATE = {"api_visibility": "private", "show_progress": "hidden"}
# Selections run beside the generations (not on the device lock: see inpaint.segment); GrabCut takes a core for
# about half a second, so a few at once keep clicks answering without starving a run.
SELECTIONS_AT_ONCE = 2

# On a phone the results sit a screen or more below Generate: a run that made something brings the first into view.
RESULTS_INTO_VIEW_JS = """() => {
    const status = document.querySelector("#inpaint-status");
    if (matchMedia("(max-width: 640px)").matches && /\\b(Done|kept [1-9])/.test(status ? status.innerText : "")) {
        document.querySelector("#inpaint-gallery").scrollIntoView({block: "start"});
    }
}"""
# What follows the model: the fields table's rows that depend on it, and the ranges, choices and LoRA parts.
FOLLOWED = ("guidance", "width", "height", "scheduler", "base_model", "model_epoch", "negative_strength",
            "concept_pick", "concept_box", "concepts", "num_samples", "steps", "strength", "negative_prompt",
            "intermediate", "prompt", "model_about", "auto_size", "status")


def wire(studio: Studio, trigger, fn, inputs, outputs, **options):
    """A private event: `fn(studio, values)` over `inputs` (a set: values arrive keyed by component)."""
    return trigger(bind(fn, studio), inputs, outputs, **{**PRIVATE, **options})
