"""Request fields on the command line: the JSON body read from a file, each field as a flag, a field's value
from its text. One table, drawn from the request schema, for every subcommand."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from .errors import RequestError
from .schema import InpaintRequest

# The inputs are files or folders on the command line, never flags.
INPUT_FIELDS = ("image", "imageId", "mask", "maskId")
# Shorter names for the flags typed most; the long names (--model-id, ...) work too.
SHORT_NAMES = {"modelId": "--model", "numSamples": "--samples", "numInferenceSteps": "--steps"}


def read_body(source: str) -> object:
    """The JSON request in file `source` (`-`: standard input)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise RequestError("REQUEST", f"cannot read {source!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError("REQUEST", f"is not valid JSON: {exc}") from None


def fields() -> dict[str, object]:
    """The request's fields by their JSON name (camelCase), with the schema's field info."""
    return {info.alias or name: info for name, info in InpaintRequest.model_fields.items()}


def _takes_text(annotation: object) -> bool:
    """Whether a field holds a string as typed (a string of digits is then the schema's to read, as for `seed`)."""
    return annotation is str or str in typing.get_args(annotation) or _choices(annotation) is not None


def _choices(annotation: object) -> tuple[str, ...] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return None


def _outpaint(text: str) -> dict[str, int]:
    """`LEFT,RIGHT,TOP,BOTTOM` in pixels; the schema checks the bounds."""
    parts = text.split(",")
    if len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
        raise RequestError("outpaint", f"{text!r} must be LEFT,RIGHT,TOP,BOTTOM in pixels, e.g. 256,256,0,0")
    return dict(zip(("left", "right", "top", "bottom"), (int(part) for part in parts)))


def value_of(field: str, text: str) -> object:
    """A field's value from its text on the command line: a string field takes the text as it is, the others
    read it as JSON (`0.6`, `true`, `[...]`); text that is not JSON is passed on for the schema to refuse,
    naming the field. `outpaint` also reads LEFT,RIGHT,TOP,BOTTOM."""
    if field == "outpaint" and not text.lstrip().startswith("{"):
        return _outpaint(text)
    if _takes_text(fields()[field].annotation):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def add_request_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per request field but the inputs (`modelId` -> --model-id, also --model), its help the schema's
    description; the parsed value is under the field's name, None when not given."""
    group = parser.add_argument_group("request fields (a flag wins over the request file)")
    for field, info in fields().items():
        if field in INPUT_FIELDS:
            continue
        words = "".join("-" + c.lower() if c.isupper() else c for c in field)
        names = [f"--{words}"]
        if field in SHORT_NAMES:
            names.insert(0, SHORT_NAMES[field])
        options: dict = {"dest": field, "default": None, "help": info.description}
        if info.annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _flag_type(field)
            options["choices"] = _choices(info.annotation)
            if options["choices"] is None:  # else argparse shows them
                options["metavar"] = "LEFT,RIGHT,TOP,BOTTOM" if field == "outpaint" else words.replace("-", "_").upper()
        group.add_argument(*names, **options)


def _flag_type(field: str):
    def convert(text: str) -> object:
        try:
            return value_of(field, text)
        except RequestError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = field  # argparse names the type in its message
    return convert


def with_flags(body: object, args: argparse.Namespace) -> object:
    """The body with the fields given as flags set (a flag wins over the file)."""
    if not isinstance(body, dict):
        return body  # refused by the schema, naming the body
    given = {field: getattr(args, field) for field in fields() if getattr(args, field, None) is not None}
    return {**body, **given}
