"""`python -m inpaint batch`: one request per picture of a folder, each with the mask of the same name;
results `<stem>-<seed>.png` and a line per picture in results.jsonl. Resumable; a bad picture fails alone."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .errors import RequestError
from .runs import Outcome, Results, Runner, check_base, run_each, say

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MASK_SUFFIX = "_mask"  # cat.png's mask may be named cat_mask.png, beside it or in the masks folder


@dataclasses.dataclass(frozen=True)
class Picture:
    path: Path
    mask: Path | None  # None: no mask of its name was found


def pictures(images: Path, masks: Path) -> list[Picture]:
    """The pictures of `images` in name order, each with its mask from `masks`: the file of the same stem
    (`masks/cat.png` for `cat.jpg`), else `<stem>_mask`. In one folder for both, the `_mask` files are masks."""
    for folder, flag in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise RequestError(flag, f"{folder} is not a folder")
    same_folder = images.resolve() == masks.resolve()
    found = _image_files(images)
    stems = {path.stem for path in found}
    if same_folder:
        found = [path for path in found if not (path.stem.endswith(MASK_SUFFIX)
                                                and path.stem[:-len(MASK_SUFFIX)] in stems)]
    if not found:
        raise RequestError("--images", f"{images} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem:
            raise RequestError("--images", f"{by_stem[path.stem].name} and {path.name} would write the same results "
                                           "(<stem>-<seed>.png): rename one")
        by_stem[path.stem] = path
    mask_files: dict[str, Path] = {}
    for path in _image_files(masks):
        mask_files.setdefault(path.stem, path)
    return [Picture(path, mask_files.get(path.stem + MASK_SUFFIX) or (None if same_folder
                                                                     else mask_files.get(path.stem)))
            for path in found]


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def run(found: list[Picture], masks: Path, base: dict, runner: Runner, out: Path, *, force: bool = False,
        parallel: int = 1) -> list[dict]:
    """Runs the pictures not done in an earlier run (all with `force`), one request each with `base`'s fields,
    `parallel` at once; the lines of this run's results.jsonl (those kept from earlier runs too)."""
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, key=lambda line: line["picture"], request=base)
    to_run = results.start([picture.path.name for picture in found], force=force, unit="picture")

    def work(picture: Picture) -> dict:
        line = {"picture": picture.path.name, "mask": picture.mask.name if picture.mask else None}
        if picture.mask is None:
            stem = picture.path.stem
            return line | Outcome("no-mask", 0.0, error=f"mask: none named {stem}.* or {stem}{MASK_SUFFIX}.* in "
                                                        f"{masks}: skipped", field="mask").to_json()
        return line | _one(picture, base, runner, out).to_json()

    run_each(work, [picture for picture in found if picture.path.name in to_run], results, unit="picture",
             runner=runner, parallel=parallel)
    return list(results.lines.values())


def _one(picture: Picture, base: dict, runner: Runner, out: Path) -> Outcome:
    try:
        image, mask = picture.path.read_bytes(), picture.mask.read_bytes()
    except OSError as exc:
        return Outcome.refused(RequestError("image", f"cannot read {exc.filename}: {exc.strerror}"), 0.0)
    return runner.run(base, lambda seed: out / f"{picture.path.stem}-{seed}.png", image=image, mask=mask)


def command(args: argparse.Namespace, base: dict, runner: Runner) -> int:
    """The subcommand: 0 when every picture succeeded (or was done before), 1 when any failed or had no mask."""
    masks = Path(args.masks or args.images)
    found = pictures(Path(args.images), masks)
    lines = run(found, masks, check_base(base, runner, inputs_given=True), runner, Path(args.out),
                force=args.force, parallel=args.parallel)
    counts = {status: sum(line["status"] == status for line in lines) for status in {l["status"] for l in lines}}
    say(", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + f": {Path(args.out) / 'results.jsonl'}")
    return 0 if counts.keys() == {"success"} else 1
