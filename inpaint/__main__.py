"""Command line: `python -m inpaint generate REQUEST.json --out DIR` (or `--dry-run`), `batch` over folders, `grid`
of settings, `segment` (an object's mask from clicks, a box or a text) and `models`. Their results are written to
--out only; `--store` keeps them in the data folder too, as the server does."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .assets import ASSET_ID_PATTERN
from .errors import DataFolderBusy, RequestError
from .flags import INPUT_FIELDS, add_request_flags, read_body, with_flags

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
LOCK_HOLDER = "inpaint command line run with --store"  # how a server refused the data folder names this process


@contextmanager
def local_engine(args: argparse.Namespace, scratch_in: Path | None = None) -> Iterator:
    """The engine of a run in this process. With --store its store is the data folder, locked as a server locks
    it: a server or another --store run on the folder is refused meanwhile. Without, it is a scratch store,
    deleted at the end: in `scratch_in` (the output folder, so a result leaves it by a rename), made for the run
    and removed again if the run left it empty."""
    from . import datalock, settings
    from .generate import default_engine

    with ExitStack() as stack:
        if args.store:
            datalock.acquire(settings.DATA_DIR, holder=LOCK_HOLDER)
            stack.callback(datalock.release, settings.DATA_DIR)
            engine = default_engine()
        else:
            engine = default_engine(stack.enter_context(_scratch_folder(scratch_in)))
        stack.callback(engine.store.close)
        yield engine


@contextmanager
def _scratch_folder(parent: Path | None) -> Iterator[Path]:
    """A folder deleted at the end, in `parent` (default: the system's); `parent` is made for it if missing, and
    removed again if nothing else was put in it."""
    made = parent is not None and not parent.exists()
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".inpaint-scratch-", dir=parent) as folder:
            yield Path(folder)
    finally:
        if made and not any(parent.iterdir()):
            parent.rmdir()


def check_inputs_readable(body: object, args: argparse.Namespace) -> None:
    """Asset ids name pictures of the data folder, which a run reads only with --store."""
    if args.store or not isinstance(body, dict):
        return
    for field in INPUT_FIELDS:
        if isinstance(body.get(field), str) and ASSET_ID_PATTERN.fullmatch(body[field]):
            raise RequestError(field, f"{body[field]} is an asset of the data folder: give --store to use it, "
                                      "or the picture itself as a data URL")


def generate(args: argparse.Namespace) -> int:
    from .jobs import Job, record
    from .runs import run_into

    body = with_flags(read_body(args.request), args)
    check_inputs_readable(body, args)
    if args.dry_run:  # what the job would do, as POST /generate/inpaint?dryRun=true answers it; nothing stored
        with local_engine(args) as engine:
            print(json.dumps({"plan": engine.plan(body).to_json()}, indent=2))
        return 0
    if args.out is None:
        raise RequestError("--out", "is required: the folder the results are written to (or give --dry-run)")
    out_dir = Path(args.out)
    with local_engine(args, scratch_in=out_dir) as engine:
        request = engine.prepare(body)
        out_dir.mkdir(parents=True, exist_ok=True)
        job = Job(request)
        try:
            run_into(engine, job, lambda asset_id, seed: out_dir / f"{asset_id}.png", keep=args.store)
        except KeyboardInterrupt:
            job.cancel.set()
            return 130
    print(json.dumps(record(job), indent=2))
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if job.status != "success":
        print(f"error: {job.error or job.status}", file=sys.stderr)
        return EXIT_FAILED
    return 0


@contextmanager
def _runner(args: argparse.Namespace, base: object):
    """Where a batch or a grid runs: on the server of --server, else in this process."""
    if args.parallel < 1:
        raise RequestError("--parallel", f"{args.parallel} must be at least 1")
    if args.server:
        if args.store:
            raise RequestError("--store", "is for runs in this process: a server stores its jobs itself")
        from .client import Remote

        yield Remote(args.server, args.key)
        return
    if args.parallel > 1:
        raise RequestError("--parallel", "needs --server: this process runs one request at a time")
    from .runs import Local

    check_inputs_readable(base, args)
    with local_engine(args, scratch_in=Path(args.out)) as engine:
        yield Local(engine, keep=args.store)


def batch(args: argparse.Namespace) -> int:
    from . import batch as folder_batch

    base = with_flags(read_body(args.request) if args.request else {}, args)
    with _runner(args, base) as runner:
        return _interruptible(lambda: folder_batch.command(args, base, runner))


def grid(args: argparse.Namespace) -> int:
    from . import grid as settings_grid

    base = with_flags(read_body(args.request), args)
    with _runner(args, base) as runner:
        return _interruptible(lambda: settings_grid.command(args, base, runner))


def _interruptible(run) -> int:
    # Ctrl-C stops the request running (its stream is closed on the way out); what was done is kept.
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted: run it again to go on where it stopped", file=sys.stderr)
        return 130


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
    from .segment import segment as select

    try:
        data = Path(args.image).read_bytes()
    except OSError as exc:
        raise RequestError("IMAGE", f"cannot read {args.image!r}: {exc.strerror}") from None
    points = [{"x": point[0], "y": point[1], "label": int(point[2]) if len(point) == 3 else 1}
              for point in args.point]
    body = {"modelId": args.model, "points": points, "grow": args.grow,
            **({"box": args.box} if args.box else {}), **({"text": args.text} if args.text is not None else {})}
    with local_engine(args, scratch_in=args.out.parent) as engine:
        selected = select(engine, body, image=data)
        try:
            (shutil.copyfile if args.store else shutil.move)(engine.store.file_path(selected.mask_id), args.out)
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
    local = argparse.ArgumentParser(add_help=False)  # what the commands that run here share
    local.add_argument("--store", action="store_true",
                       help="keep the job, its inputs and its results in the data folder (INPAINT_DATA_DIR), as the "
                            "server keeps them, holding the folder's lock meanwhile; without it nothing is stored")
    gen = commands.add_parser("generate", parents=[local],
                              help="run one inpaint request (the JSON body of POST /generate/inpaint)")
    gen.add_argument("request", help="path of the JSON request, or - for standard input")
    gen.add_argument("--out", help="folder for the results, written as <assetId>.png")
    gen.add_argument("--dry-run", action="store_true",
                     help="print the plan (the request with its defaults, the regions, the seeds) and run nothing")
    add_request_flags(gen)
    gen.set_defaults(handler=generate)
    many = argparse.ArgumentParser(add_help=False, parents=[local])  # what batch and grid share
    many.add_argument("--out", required=True, help="folder for the results, results.jsonl and (grid) the sheet")
    many.add_argument("--force", action="store_true",
                      help="run again what an earlier run into --out did (by default it is skipped)")
    many.add_argument("--server", metavar="URL",
                      help="send the requests to a running server's REST API instead of running them here")
    many.add_argument("--key", default=os.environ.get("INPAINT_API_KEY") or None,
                      help="the server's API key (default: $INPAINT_API_KEY)")
    many.add_argument("--parallel", type=int, default=1, metavar="N",
                      help="with --server, requests sent at once (as many as its workers, to keep them all busy)")
    bat = commands.add_parser("batch", parents=[many],
                              help="one request per picture of a folder, masks matched by name")
    bat.add_argument("--images", required=True, metavar="DIR", help="folder of pictures (png, jpg, jpeg, webp)")
    bat.add_argument("--masks", metavar="DIR",
                     help="folder of masks: cat.png's is cat.* or cat_mask.* (default: --images, cat_mask.*)")
    bat.add_argument("--request", metavar="BASE.json", help="a request body whose fields every picture's request takes")
    add_request_flags(bat)
    bat.set_defaults(handler=batch)
    gri = commands.add_parser("grid", parents=[many], help="one request per combination of settings, as a contact "
                                                           "sheet and a report")
    gri.add_argument("request", help="path of the JSON request (with its image and mask), or - for standard input")
    gri.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2,...",
                     help="a request field and its values (up to three --vary: columns, rows, blocks)")
    gri.add_argument("--crop", action="store_true", help="show the region around the mask in the sheet")
    gri.add_argument("--yes", action="store_true", help="run a grid of more than 256 cells")
    add_request_flags(gri)
    gri.set_defaults(handler=grid)
    seg = commands.add_parser("segment", parents=[local], help="select an object by clicks, a box or a text and save its mask "
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
    except DataFolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
