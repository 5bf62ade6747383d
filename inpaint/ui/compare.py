"""The studio's "Compare settings" panel: one request per value of one field, each its own run (one job of the
server's queue), drawn as the labelled contact sheet that `python -m inpaint grid` draws (inpaint.grid checks the
values, inpaint.sheet draws them)."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from .. import grid, sheet
from ..assets import new_id
from ..errors import RequestError
from ..events import Failed, Result
from ..runs import Outcome
from ..schema import SEED_MAX
from . import device
from .fields import COMPARED, FIELDS, VALUES_HINT
from .handlers import Studio, decoding, failure_message, plain, run_inputs

MAX_VALUES = 12  # each value is a whole run: a dozen already takes a while on a GPU, and a sheet a dozen wide


class CatalogModels:
    """What grid.cells asks of where the requests run: the model ids it knows."""

    def __init__(self, catalog):
        self.catalog = catalog

    def model_ids(self) -> set[str]:
        return set(self.catalog.ids)


def field_name(field: str) -> str:
    return next((name for name, key in COMPARED if key == field), field)


def axis_of(field: str | None, listed: str | None) -> grid.Axis:
    """The panel's field and values as a grid axis; a RequestError names the panel's words and the rule."""
    if field not in dict(map(reversed, COMPARED)):
        raise RequestError("compare", f"pick a field to compare: {', '.join(name for name, _ in COMPARED)}")
    name = field_name(field)
    if not (listed or "").strip():
        raise RequestError("compare", f"{name}: type the values to compare. {VALUES_HINT}")
    try:
        axis = grid.axis(f"{field}={listed}")
    except RequestError as exc:
        raise RequestError("compare", f"{name}: {exc.message}") from None
    if len(axis.values) > MAX_VALUES:
        raise RequestError("compare", f"{name}: {len(axis.values)} values; compare at most {MAX_VALUES} at once")
    return axis


def cells_of(studio: Studio, base: dict, axis: grid.Axis) -> list[grid.Cell]:
    """Every value checked by the request's schema (and models by the catalog) before anything runs."""
    try:
        return grid.cells(base, [axis], CatalogModels(studio.catalog), allow_many=False)
    except RequestError as exc:
        where = exc.field.removeprefix("--vary").strip()
        if where and where != axis.field:  # a field of the base request: the page's own words for it
            raise
        raise RequestError("compare", f"{field_name(axis.field)}: {exc.message}") from None


def base_request(studio: Studio, values: dict, state: dict,
                 axis: grid.Axis) -> tuple[dict, bytes | None, Image.Image | None]:
    """The page's request with one result per cell and, unless the seed is what varies, one seed for all (the cells
    differ by the compared setting alone); with the picture's file and the drawn mask, as a run takes them."""
    with decoding(studio, None, values.get("sketch"), values.get("mask")):
        body, picture, mask, _ = run_inputs(studio, values, state)
    if mask is None and "outpaint" not in body:  # said once for the panel, not by each cell
        raise RequestError("mask", "mask is empty: paint the area to repaint")
    body.update(numSamples=1, intermediateImages=False)
    if axis.field != "seed" and "seed" not in body:
        body["seed"] = random.randint(0, SEED_MAX)
    return body, picture, mask


def run_cell(studio: Studio, body: dict, mask: Image.Image | None, cell: grid.Cell, out: Path,
             cancel: threading.Event) -> dict:
    """One cell's request, run to its end as the studio runs one (through the job queue when the server has one);
    its line as results.jsonl words it, its result copied into `out`."""
    started = time.perf_counter()
    try:
        resolved = studio.engine.prepare({**body, **cell.values}, mask=mask)
    except RequestError as exc:
        return {"cell": dict(cell.settings), **Outcome.refused(exc, time.perf_counter() - started).to_json()}
    outcome = Outcome("success", 0.0, warnings=list(resolved.warnings), input=resolved.to_json())
    run_key = new_id("run")
    device.CANCELS[run_key] = cancel  # the studio's Stop reaches the run wherever it runs
    try:
        events = device.studio_events(studio.jobs, studio.engine_key, resolved, run_key)
        for event in events:
            if isinstance(event, Result):
                name = f"cell-{cell.index:03d}-{event.asset.seed}.png"
                shutil.copyfile(studio.engine.store.file_path(event.asset.id, original=True), out / name)
                outcome.files.append(name)
                outcome.seeds.append(event.asset.seed)
                outcome.seam_reports.append(event.seam_report)
            elif isinstance(event, Failed) and event.kind == "canceled":
                outcome.status, outcome.error = "canceled", "stopped"
            elif isinstance(event, Failed):  # the cell fails alone, in the sheet's words
                outcome.status, outcome.error = "failure", failure_message(studio, event)
            if cancel.is_set() and outcome.status == "success":
                events.close()  # stops the generation within a step
                outcome.status, outcome.error = "canceled", "stopped"
    finally:
        device.CANCELS.pop(run_key, None)
    outcome.seconds = time.perf_counter() - started
    return {"cell": dict(cell.settings), **outcome.to_json()}


def compare(studio: Studio, values: dict, request: gr.Request | None = None):
    """The panel's Generate: the cells one after another, the sheet redrawn in the gallery as each ends. Stop ends
    the cell running and skips the rest (the sheet says so in their places); the sheet's PNG is the download."""
    ui = studio.ui
    by_param = {field.param: values[ui[field.component]] for field in FIELDS}
    key = getattr(request, "session_hash", None)
    if key in studio.running:
        raise gr.Error("A run is going in this page: Stop ends it", title="Compare settings")
    try:
        axis = axis_of(values[ui.compare_field], values[ui.compare_values])
        body, picture, mask = base_request(studio, by_param, dict(values[ui.session] or {}), axis)
        cells = cells_of(studio, body, axis)
    except RequestError as exc:
        words = exc.message if exc.field == "compare" else plain(studio, exc)
        raise gr.Error(f"Compare settings: {words}", title="Please check") from None
    if picture is not None:  # stored once for every cell
        body["image"] = studio.engine.upload(picture, hide=True).id
    out = studio.files_dir / new_id("compare")
    out.mkdir(parents=True)
    cancel = threading.Event()
    if key:
        studio.running[key] = cancel
    lines: list[dict] = []
    title = f"{field_name(axis.field)}: {', '.join(axis.texts)}"
    try:
        for cell in cells:
            if cancel.is_set():
                lines.append({"cell": dict(cell.settings), **Outcome("canceled", 0.0, error="stopped").to_json()})
                continue
            yield {ui.status: f"**Comparing** {title} · {cell.settings[0][1]} ({cell.index + 1} of {len(cells)})"}
            lines.append(run_cell(studio, body, mask, cell, out, cancel))
            yield drawn(studio, axis, lines, cells, out, title, done=False)
    finally:
        if key and studio.running.get(key) is cancel:
            del studio.running[key]
    yield drawn(studio, axis, lines, cells, out, title, done=True)


def drawn(studio: Studio, axis: grid.Axis, lines: list[dict], cells: list[grid.Cell], out: Path, title: str, *,
          done: bool) -> dict:
    """The sheet of the cells so far (those still to run drawn empty), in the gallery and as the download."""
    ui = studio.ui
    waiting = [{"cell": dict(cell.settings), **Outcome("waiting", 0.0).to_json()} for cell in cells[len(lines):]]
    path = out / f"compare-{len(lines)}.png"
    sheet.contact_sheet([axis], lines + waiting, out).save(path)
    succeeded = sum(line["status"] == "success" for line in lines)
    status = (f"**Done** · {title} · {succeeded} of {len(cells)} succeeded" if done
              else f"**Comparing** {title} · {len(lines)} of {len(cells)} done")
    return {ui.gallery: [(str(path), title)], ui.download: str(path), ui.status: status,
            ui.params: {"compared": axis.field, "cells": lines}}
