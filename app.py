"""inpaint studio: the Gradio UI at / and the JSON REST API beside it, in one server."""

import os

try:
    from spaces.config import Config as _spaces
except ImportError:
    _spaces = None
if getattr(_spaces, "zero_gpu", False):
    # Before the settings are read: the main process of a ZeroGPU Space sees no GPU, so they would pick a
    # classical default model.
    os.environ.setdefault("INPAINT_DEFAULT_MODEL", "sd-1_5-inpainting")

from inpaint import zerogpu  # these read the settings
from inpaint.api import create_app


def create_space_app():
    """The app; on ZeroGPU the default model and INPAINT_PRELOAD's are loaded and placed on cuda now, at
    startup and outside the GPU function, as ZeroGPU asks (elsewhere models load on first use)."""
    app = create_app()
    if zerogpu.is_zerogpu():
        placed = zerogpu.preload(app.state.engine.pipelines)
        print(f"ZeroGPU: placed {', '.join(placed) or 'no model'} at startup")
    return app


if __name__ == "__main__":
    import sys

    from inpaint.server import serve

    sys.exit(serve(create_space_app))
