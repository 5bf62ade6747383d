"""What a grid of settings shows: the contact sheet (grid.png), labelled with the axes' values, and the report
(index.html), every cell with its settings, time, seam report and pictures; it opens offline, from the folder."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import imageops

TILE_PX = 256  # a cell's longer side on the sheet: a result's detail stays visible with a dozen columns
GAP_PX = 8
LABEL_PX = 15  # the font size of the labels
MAX_LABEL_PX = 240  # a row label longer than this (a prompt) is cut with an ellipsis
INK, FAINT, FAILED, PAPER, EMPTY = (20, 20, 20), (110, 110, 110), (170, 20, 20), (255, 255, 255), (232, 232, 232)


@dataclasses.dataclass(frozen=True)
class Axis:
    """A field the grid varies: its values as typed (the labels) and as the request takes them."""

    field: str
    texts: tuple[str, ...]
    values: tuple


def mask_box(base: dict) -> tuple[float, float, float, float]:
    """The region around the request's mask (its box plus context, as the engine crops it), in fractions of the
    mask's size: results of another size (an outpaint, a resized mask) are cropped at the same place."""
    mask = imageops.load_mask(imageops.decode_data_url(base["mask"], field="mask"), field="mask")
    binary = mask.point(lambda value: 255 if value >= imageops.MASK_THRESHOLD else 0)
    left, top, right, bottom = imageops.crop_box(binary)
    return left / mask.width, top / mask.height, right / mask.width, bottom / mask.height


def _font(size: int = LABEL_PX) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _position(axes: list[Axis], line: dict) -> tuple[int, int, int]:
    """Column, row and block of a cell: the first axis across, the second down, the third in blocks."""
    indexes = [axis.texts.index(line["cell"][axis.field]) for axis in axes] + [0, 0]
    return indexes[0], indexes[1], indexes[2]


def _picture(out: Path, line: dict, crop_box) -> Image.Image | None:
    if line["status"] != "success" or not line["files"]:
        return None
    with Image.open(out / line["files"][0]) as opened:
        picture = opened.convert("RGB")
    if crop_box is not None:
        width, height = picture.size
        picture = picture.crop((round(crop_box[0] * width), round(crop_box[1] * height),
                                round(crop_box[2] * width), round(crop_box[3] * height)))
    return picture


def _caption(line: dict) -> str:
    if line["status"] != "success":
        return line["status"]
    report = next(iter(line["seamReports"]), None)
    seam = f"  ·  seam dE {report['seamDeltaE']:.1f}" if report and report.get("seamDeltaE") is not None else ""
    return f"{line['seconds']:.1f} s{seam}"


def contact_sheet(axes: list[Axis], lines: list[dict], out: Path, *, crop_box=None) -> Image.Image:
    """The cells as one picture: the first result of each (or the region around the mask, `crop_box`), the
    first axis's values over the columns, the second's beside the rows, the third's over blocks of rows; under
    each cell its time and seam colour step, or why it failed."""
    pictures = [_picture(out, line, crop_box) for line in lines]
    first = next((picture for picture in pictures if picture is not None), None)
    aspect = first.width / first.height if first is not None else 1.0
    tile = (TILE_PX, round(TILE_PX / aspect)) if aspect >= 1 else (round(TILE_PX * aspect), TILE_PX)
    font, small = _font(), _font(LABEL_PX - 2)
    line_px = LABEL_PX + 8
    sizes = [len(axis.texts) for axis in axes] + [1, 1]
    columns, rows, blocks = sizes[:3]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_labels = [f"{axes[1].field} = {text}" for text in axes[1].texts] if len(axes) > 1 else []
    label_width = min(MAX_LABEL_PX, max((measure.textlength(label, font=font) for label in row_labels),
                                        default=-GAP_PX) + GAP_PX)
    cell = (tile[0] + GAP_PX, tile[1] + line_px + GAP_PX)
    block_title = line_px + GAP_PX if len(axes) > 2 else 0
    block_height = block_title + line_px + rows * cell[1]
    sheet = Image.new("RGB", (round(GAP_PX + label_width + columns * cell[0] + GAP_PX),
                              GAP_PX + blocks * block_height + GAP_PX), PAPER)
    draw = ImageDraw.Draw(sheet)
    left = GAP_PX + label_width

    for block in range(blocks):
        top = GAP_PX + block * block_height
        if block_title:
            draw.text((GAP_PX, top), _fit(draw, f"{axes[2].field} = {axes[2].texts[block]}", font, sheet.width),
                      font=font, fill=INK)
        header = top + block_title
        for column, text in enumerate(axes[0].texts):
            draw.text((left + column * cell[0], header), _fit(draw, f"{axes[0].field} = {text}", font, tile[0]),
                      font=font, fill=INK)
        for row, label in enumerate(row_labels):
            y = header + line_px + row * cell[1] + tile[1] // 2 - LABEL_PX // 2
            draw.text((GAP_PX, y), _fit(draw, label, font, label_width - GAP_PX), font=font, fill=INK)

    for line, picture in zip(lines, pictures):
        column, row, block = _position(axes, line)
        x = round(left + column * cell[0])
        y = GAP_PX + block * block_height + block_title + line_px + row * cell[1]
        if picture is None:
            draw.rectangle((x, y, x + tile[0] - 1, y + tile[1] - 1), fill=EMPTY)
            _wrapped(draw, line.get("error") or line["status"], (x + 6, y + 6), tile[0] - 12, small, FAILED)
        else:
            sheet.paste(ImageOps.pad(picture, tile, color=EMPTY), (x, y))
        draw.text((x, y + tile[1] + 3), _fit(draw, _caption(line), small, tile[0]), font=small,
                  fill=FAINT if picture is not None else FAILED)
    return sheet


def _wrapped(draw: ImageDraw.ImageDraw, text: str, origin: tuple[int, int], width: int, font, fill) -> None:
    """`text` wrapped at spaces to `width`, a line under the other."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    for index, text_line in enumerate(lines):
        draw.text((origin[0], origin[1] + index * (LABEL_PX + 2)), _fit(draw, text_line, font, width), font=font,
                  fill=fill)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #141414; }
table { border-collapse: collapse; }
td, th { border-top: 1px solid #ddd; padding: 8px; vertical-align: top; text-align: left; }
img { max-width: 320px; display: block; }
.sheet img { max-width: 100%; }
.failure, .canceled, .no-mask { color: #aa1414; }
figure { display: inline-block; margin: 0 8px 0 0; }
figcaption, .quiet { color: #6e6e6e; }
code { white-space: pre-wrap; }
"""


def report(axes: list[Axis], lines: list[dict], base: dict) -> str:
    """index.html: the sheet, then a row per cell with its settings, time, seam report and pictures. Relative
    links to the files beside it only, no scripts: it opens offline, from the folder or an archive of it."""
    e = html.escape
    shared = {field: (f"data URL, {len(value) * 3 // 4:,} bytes" if str(value).startswith("data:") else value)
              for field, value in base.items()}
    title = " × ".join(axis.field for axis in axes)
    rows = []
    for line in lines:
        settings = "<br>".join(f"<b>{e(field)}</b> = {e(text)}" for field, text in line["cell"].items())
        pictures = "".join(
            f'<figure><a href="{e(name)}"><img src="{e(name)}" alt="{e(name)}"></a>'
            f"<figcaption>seed {seed}</figcaption></figure>"
            for name, seed in zip(line["files"], line["seeds"]))
        seams = "<br>".join(
            f"outside the mask: {r['outsideMaskMaxDiff']}<br>seam ΔE: {r['seamDeltaE']:.2f}" if r else "not measured"
            for r in line["seamReports"])
        notes = "".join(f'<p class="quiet">{e(warning)}</p>' for warning in line.get("warnings", []))
        if line.get("error"):
            notes += f'<p class="{e(line["status"])}">{e(line["error"])}</p>'
        resolved = (f"<details><summary>request</summary><code>{e(json.dumps(line['input'], indent=1))}</code>"
                    "</details>" if line.get("input") else "")
        rows.append(f'<tr><td>{settings}{resolved}</td><td class="{e(line["status"])}">{e(line["status"])}<br>'
                    f'{line["seconds"]:.2f} s</td><td>{seams}</td><td>{pictures}{notes}</td></tr>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Grid: {e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>Grid: {e(title)}</h1>
<p class="quiet">Every cell: <code>{e(json.dumps(shared))}</code></p>
<p class="sheet"><a href="grid.png"><img src="grid.png" alt="The contact sheet"></a></p>
<table>
<tr><th>settings</th><th>status, time</th><th>seam report</th><th>results</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
