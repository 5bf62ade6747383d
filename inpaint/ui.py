"""The Gradio studio: sketch a mask, stream the denoising, browse the results."""

from __future__ import annotations

import gradio as gr


def build_demo(engine) -> gr.Blocks:
    """A new Blocks around `engine` (a factory: one Blocks per server). Work in progress."""
    with gr.Blocks(title="inpaint studio") as demo:
        gr.Markdown("# inpaint studio")
        gr.Dropdown(choices=engine.catalog.ids, label="Model")
    return demo
