"""The Gradio studio: paint a mask, watch the run, browse and reuse the results.

`app.build_demo` wires `layout` (the page) to `handlers` (what it does); `fields` is the one table of
request fields and their components; `device` runs the engine (in the GPU process on ZeroGPU)."""

from ..schema import DEFAULT_SAMPLES
from .app import build_demo
from .examples import draw_example
from .fields import PROMPT_HINT
from .head import FirstScript
from .layout import CSS, THEME

__all__ = ["CSS", "DEFAULT_SAMPLES", "FirstScript", "PROMPT_HINT", "THEME", "build_demo", "draw_example"]
