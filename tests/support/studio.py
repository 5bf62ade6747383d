"""The studio driven as its page drives it: its event functions by name, the picture and painter values a page
sends, the page after a stream of updates."""

from PIL import Image

from tests.support.images import as_url, encoded

SIZE = 128
BOX = (40, 40, 88, 88)


def handler(demo, name: str):
    """One of the Blocks' event functions, by its Python name (the private ones have no API route)."""
    for block_fn in demo.fns.values():
        if getattr(block_fn.fn, "__name__", None) == name:
            return block_fn.fn
    raise LookupError(name)


def painted(image: Image.Image, box=None) -> dict:
    """The picture and the painter's value as the page hands them to the run: the picture's bytes (the page
    sends a path in Gradio's cache), and the painter's PNG, opaque in `box`, as a data URL."""
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    if box:
        layer.paste((255, 45, 85, 255), box)
    return {"image": encoded(image.convert("RGB")), "sketch": as_url(encoded(layer))}


def merged(outputs: list[dict]) -> dict:
    """The page after a stream of partial updates: each component's last value."""
    page = {}
    for out in outputs:
        page.update(out)
    return page
