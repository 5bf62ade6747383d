"""Command line: `python -m inpaint generate REQUEST.json --out DIR`, `python -m inpaint segment IMAGE --model ID
--out MASK.png` and `python -m inpaint models`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .errors import RequestError

EXIT_BAD_INPUT = 2


def _read_body(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise RequestError("REQUEST", f"cannot read {source!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError("REQUEST", f"is not valid JSON: {exc}") from None


def _with_flags(body: object, args: argparse.Namespace) -> object:
    """The body with the fields given as flags set (a flag wins over the file)."""
    if not isinstance(body, dict):
        return body  # refused by the schema, naming the body
    flags = {"colorMatch": args.color_match, "maskMode": args.mask_mode, "outpaint": args.outpaint}
    return {**body, **{name: value for name, value in flags.items() if value is not None}}


def _outpaint(text: str) -> dict[str, int]:
    """`LEFT,RIGHT,TOP,BOTTOM` in pixels; the schema checks the bounds."""
    parts = text.split(",")
    if len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} must be LEFT,RIGHT,TOP,BOTTOM in pixels, e.g. 256,256,0,0")
    return dict(zip(("left", "right", "top", "bottom"), (int(part) for part in parts)))


def generate(args: argparse.Namespace) -> int:
    from .generate import default_engine
    from .jobs import Job, record, run_job

    body = _with_flags(_read_body(args.request), args)
    engine = default_engine()
    request = engine.prepare(body)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def copy_result(job: Job, durable: bool) -> None:
        # Results land in DIR one by one, as they are made: an interrupted run keeps what it made.
        for asset_id in job.asset_ids:
            target = out_dir / f"{asset_id}.png"
            if not target.exists():
                shutil.copyfile(engine.store.file_path(asset_id, original=True), target)
        if durable:
            engine.store.save_job(record(job))

    job = Job(request)
    try:
        run_job(engine, job, on_change=copy_result)
    except KeyboardInterrupt:
        job.cancel.set()
        return 130
    print(json.dumps(record(job), indent=2))
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if job.status != "success":
        print(f"error: {job.error or job.status}", file=sys.stderr)
        return 1
    return 0


def _numbers(count: tuple[int, ...], example: str):
    """An argparse type: `count` comma-separated numbers, e.g. `X,Y` or `X,Y,0`."""
    def parse(text: str) -> list[float]:
        parts = text.split(",")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(parts) not in count or len(numbers) != len(parts):
            raise argparse.ArgumentTypeError(f"{text!r} must be {example}")
        return numbers
    return parse


def segment(args: argparse.Namespace) -> int:
    from . import imageops
    from .generate import default_engine
    from .segment import segment as select

    try:
        data = Path(args.image).read_bytes()
    except OSError as exc:
        raise RequestError("IMAGE", f"cannot read {args.image!r}: {exc.strerror}") from None
    points = [{"x": point[0], "y": point[1], "label": int(point[2]) if len(point) == 3 else 1}
              for point in args.point]
    body = {"image": imageops.bytes_data_url(data), "modelId": args.model, "points": points, "grow": args.grow,
            **({"box": args.box} if args.box else {}), **({"text": args.text} if args.text is not None else {})}
    engine = default_engine()
    selected = select(engine, body)
    try:
        shutil.copyfile(engine.store.file_path(selected.mask_id, original=True), args.out)
    except OSError as exc:
        raise RequestError("--out", f"cannot write {str(args.out)!r}: {exc.strerror}") from None
    print(json.dumps({"out": str(args.out), "maskId": selected.mask_id, "imageId": selected.image_id,
                      "score": selected.score, "modelId": selected.model_id, "width": selected.mask.width,
                      "height": selected.mask.height}, indent=2))
    return 0


def models(args: argparse.Namespace) -> int:
    from . import settings
    from .catalog import Catalog
    from .responses import ModelOut

    catalog = Catalog.load(settings.USER_CATALOG)
    if args.json:
        print(json.dumps([ModelOut.of(entry).model_dump(exclude_unset=True) for entry in catalog.entries()], indent=2))
        return 0
    for entry in catalog.entries():
        print(f"{entry.id:<22} {entry.type.name:<12} {entry.availability():<15} {entry.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inpaint", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="run one inpaint request (the JSON body of POST /generate/inpaint)")
    gen.add_argument("request", help="path of the JSON request, or - for standard input")
    gen.add_argument("--out", required=True, help="folder for the results, written as <assetId>.png")
    gen.add_argument("--color-match", choices=("none", "mean-std", "histogram"),
                     help="sets the request's colorMatch: colour matching of the generated regions")
    gen.add_argument("--mask-mode", choices=("binary", "soft"),
                     help="sets the request's maskMode: soft keeps the mask's grey levels as opacity")
    gen.add_argument("--outpaint", type=_outpaint, metavar="LEFT,RIGHT,TOP,BOTTOM",
                     help="sets the request's outpaint: pixels added per side (the mask becomes optional)")
    gen.set_defaults(handler=generate)
    seg = commands.add_parser("segment", help="select an object by clicks, a box or a text and save its mask "
                                               "(white = selected), as POST /segment does")
    seg.add_argument("image", help="the picture (PNG, JPEG or WebP)")
    seg.add_argument("--point", action="append", default=[], type=_numbers((2, 3), "X,Y or X,Y,0 (0: remove)"),
                     metavar="X,Y[,0]", help="a click in pixels that adds the object under it; ,0 removes (repeatable)")
    seg.add_argument("--box", type=_numbers((4,), "X0,Y0,X1,Y1"), metavar="X0,Y0,X1,Y1",
                     help="a box around the object, in pixels")
    seg.add_argument("--text", help="what to select, in words, for models that read text")
    seg.add_argument("--grow", type=int, default=0, metavar="PX",
                     help="pixels to grow the selection by (0..64), so an eraser takes the object's halo too")
    seg.add_argument("--model", required=True, help="a model that selects (python -m inpaint models: grabcut, ...)")
    seg.add_argument("--out", required=True, type=Path, help="where to write the mask (PNG)")
    seg.set_defaults(handler=segment)
    mod = commands.add_parser("models", help="list the model catalog")
    mod.add_argument("--json", action="store_true", help="print the catalog as JSON, as GET /models does")
    mod.set_defaults(handler=models)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except RequestError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
