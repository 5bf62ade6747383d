"""inpaint: a self-hostable diffusion inpainting studio (engine, UI, REST API, CLI)."""

__version__ = "0.1.0"
