"""`python -m inpaint grid REQUEST.json --vary FIELD=V1,V2,...`: one request per combination of up to three
fields' values, drawn as a labelled contact sheet (grid.png) and an offline report (index.html), with a line per
cell in results.jsonl. Resumable; a failing cell fails alone."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import math
import random
from pathlib import Path

from . import sheet
from .errors import RequestError
from .flags import INPUT_FIELDS, fields, value_of
from .runs import Results, Runner, check_base, check_model, run_each, say
from .schema import SEED_MAX, parse_request
from .sheet import Axis

MAX_FIELDS = 3  # columns, rows, and blocks of rows
MAX_CELLS = 256  # past it a grid runs only with --yes: a typo in a value list can ask for thousands


@dataclasses.dataclass(frozen=True)
class Cell:
    index: int
    settings: tuple[tuple[str, str], ...]  # (field, value as typed) per axis, in the axes' order
    values: dict

    @property
    def key(self) -> str:
        return json.dumps(dict(self.settings))


def axis(text: str) -> Axis:
    """`FIELD=V1,V2,...` (values comma-separated, a value with a comma in double quotes, as in CSV)."""
    field, equals, listed = text.partition("=")
    field = field.strip()
    if not equals:
        raise RequestError("--vary", f"{text!r} must be FIELD=V1,V2,... (e.g. strength=0.5,0.7,0.9)")
    if field not in fields():
        raise RequestError("--vary", f"{field!r} is not a field of the inpaint request; fields: "
                                     f"{', '.join(name for name in fields() if name not in INPUT_FIELDS)}")
    if field in INPUT_FIELDS:
        raise RequestError("--vary", f"{field} is an input, not a setting: `batch` runs one request per picture")
    texts = tuple(value.strip() for value in next(csv.reader([listed], skipinitialspace=True), []))
    if not texts or any(not value for value in texts):
        raise RequestError(f"--vary {field}", f"{listed!r} must list values separated by commas, none empty")
    if len(set(texts)) < len(texts):
        raise RequestError(f"--vary {field}", f"{listed!r} lists a value twice")
    try:
        values = tuple(value_of(field, value) for value in texts)
    except RequestError as exc:
        raise RequestError(f"--vary {field}", exc.message) from None
    return Axis(field, texts, values)


def cells(base: dict, axes: list[Axis], runner: Runner, *, allow_many: bool) -> list[Cell]:
    """Every combination of the axes' values, each checked by the request schema (and the model catalog where
    the requests run) before anything runs: a value the schema refuses is named with its field."""
    if not axes:
        raise RequestError("--vary", "give at least one, e.g. --vary strength=0.5,0.7,0.9")
    if len(axes) > MAX_FIELDS:
        raise RequestError("--vary", f"{len(axes)} fields: a grid varies at most {MAX_FIELDS}")
    repeated = sorted({a.field for a in axes if [b.field for b in axes].count(a.field) > 1})
    if repeated:
        raise RequestError("--vary", f"{', '.join(repeated)} is varied twice: give its values in one --vary")
    check_base(base, runner, inputs_given=False)
    for one in axes:
        for text, value in zip(one.texts, one.values):
            try:
                parse_request({**base, one.field: value})
                if one.field == "modelId":
                    check_model(value, runner, field="modelId")
            except RequestError as exc:
                rule = exc.message if exc.field == one.field else f"{exc.field}: {exc.message}"
                raise RequestError(f"--vary {one.field}", f"{text!r}: {rule}") from None
    count = math.prod(len(one.values) for one in axes)
    if count > MAX_CELLS and not allow_many:
        raise RequestError("--vary", f"{count} cells is more than {MAX_CELLS}: pass --yes to run them all")
    return [Cell(index, tuple((a.field, text) for a, (text, _) in zip(axes, combination)),
                 {a.field: value for a, (_, value) in zip(axes, combination)})
            for index, combination in enumerate(itertools.product(*(zip(a.texts, a.values) for a in axes)))]


def _fixed_seed(base: dict, axes: list[Axis], results: Results) -> dict:
    """Fields every cell shares. One result per cell unless the base asks for more; and one seed for all unless
    the seed is set or varied, so that cells differ by their settings alone (a rerun keeps the first run's)."""
    shared = {} if "numSamples" in base else {"numSamples": 1}
    if "seed" in base or any(a.field == "seed" for a in axes):
        return shared
    earlier = [line["input"]["seed"] for line in results.lines.values() if line.get("input")]
    seed = earlier[0] if earlier else random.randint(0, SEED_MAX - 128)  # room for any numSamples
    say(f"seed {seed} for every cell (set seed in the request, or --vary seed=..., to choose)")
    return {**shared, "seed": seed}


def run(base: dict, axes: list[Axis], grid: list[Cell], runner: Runner, out: Path, *, force: bool = False,
        crop: bool = False, parallel: int = 1) -> list[dict]:
    """Runs the cells not done in an earlier run (all with `force`), `parallel` at once, then draws grid.png and
    index.html from every cell's line; the lines of results.jsonl, in the grid's order."""
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, key=lambda line: json.dumps(line["cell"]), request=base)
    shared = _fixed_seed(base, axes, results)
    to_run = results.start([cell.key for cell in grid], force=force, unit="cell")
    body = dict(base)
    if to_run and isinstance(body.get("image"), str) and body["image"].startswith("data:"):
        body["image"] = runner.upload(body["image"])  # sent and stored once, not once per cell

    def work(cell: Cell) -> dict:
        outcome = runner.run({**body, **shared, **cell.values}, lambda seed: out / f"cell-{cell.index:03d}-{seed}.png")
        return {"cell": dict(cell.settings), **outcome.to_json()}

    run_each(work, [cell for cell in grid if cell.key in to_run], results, unit="cell", runner=runner,
             parallel=parallel)
    lines = [results.lines[cell.key] for cell in grid]
    crop_box = sheet.mask_box(base) if crop else None
    sheet.contact_sheet(axes, lines, out, crop_box=crop_box).save(out / "grid.png")
    (out / "index.html").write_text(sheet.report(axes, lines, base))
    return lines


def command(args: argparse.Namespace, base: dict, runner: Runner) -> int:
    """The subcommand: 0 when every cell succeeded (or was done before), else 1."""
    axes = [axis(text) for text in args.vary]
    if args.crop and not (isinstance(base, dict) and str(base.get("mask", "")).startswith("data:")):
        raise RequestError("--crop", "needs the request's mask as a data URL (`mask`): its box is the crop")
    grid = cells(base, axes, runner, allow_many=args.yes)
    lines = run(base, axes, grid, runner, Path(args.out), force=args.force, crop=args.crop, parallel=args.parallel)
    failed = sum(line["status"] != "success" for line in lines)
    say(f"{len(lines) - failed} of {len(lines)} cells succeeded: {Path(args.out) / 'grid.png'}, "
        f"{Path(args.out) / 'index.html'}")
    return 1 if failed else 0
