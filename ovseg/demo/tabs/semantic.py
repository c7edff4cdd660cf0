"""Semantic segmentation tab: image + typed vocabulary -> overlay, legend, table, downloads.

API endpoint ``/segment``: ``(image, vocabulary, opacity) -> (overlay image, legend HTML,
classes table, [results JSON, label PNG, overlay PNG])``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from ovseg.demo.handlers import (
    SEMANTIC_TASK,
    TABLE_HEADERS,
    SemanticHandler,
    render_overlay,
    vocabulary_text,
)
from ovseg.demo.tabs.base import (
    MODEL_CONCURRENCY_ID,
    DemoContext,
    TabSpec,
    example_scenes,
    session_id,
)

VOCABULARY_HELP = "Classes separated by commas; synonyms of one class separated by '|'."


def _default_vocabulary(ctx: DemoContext, handler: SemanticHandler) -> str:
    if ctx.examples:
        return ctx.examples[0].vocabulary
    vocabulary = getattr(handler.pipeline, "vocabulary", None)
    return vocabulary_text(vocabulary) if vocabulary is not None else ""


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    handler: SemanticHandler = ctx.handler(spec)  # built now: a bad preset fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(
                type="filepath",
                image_mode=None,  # gradio passes the file on undecoded; ovseg's reader caps pixels
                label="Image",
                sources=["upload", "clipboard"],
                elem_id=f"{key}-image",
            )
            vocabulary = gr.Textbox(
                value=_default_vocabulary(ctx, handler),
                label="Vocabulary",
                info=VOCABULARY_HELP,
                lines=1,
                max_lines=4,
                max_length=4000,
                elem_id=f"{key}-vocabulary",
            )
            opacity = gr.Slider(
                0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity", elem_id=f"{key}-opacity"
            )
            run = gr.Button("Segment", variant="primary", elem_id=f"{key}-run")
            example_scenes(ctx, key, image, vocabulary, "vocabulary")
        with gr.Column(scale=1):
            overlay = gr.Image(
                label="Overlay",
                type="numpy",
                format="png",
                interactive=False,
                elem_id=f"{key}-overlay",
            )
            legend = gr.HTML(label="Legend", elem_id=f"{key}-legend")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["str", "number", "number", "number"],
                interactive=False,
                label="Classes",
                elem_id=f"{key}-table",
            )
            files = gr.File(
                label="Downloads (results JSON, label PNG, overlay PNG)",
                file_count="multiple",
                interactive=False,
                elem_id=f"{key}-files",
            )
    last = gr.State(None)  # decoded image, labels and names of this session's last run

    def segment(image_path: str | None, text: str, alpha: float, request: gr.Request) -> tuple:
        with ctx.user_errors():
            out = ctx.handler(spec).run(
                image_path,
                text,
                opacity=alpha,
                out_dir=ctx.files.directory(session_id(request)),
            )
        labels = out.result.sem_seg.astype(np.uint16)  # a quarter of int64's memory per session
        state = {"image": out.image, "labels": labels, "names": out.result.class_names}
        return out.overlay, out.legend_html, out.table, [str(p) for p in out.files], state

    def recolour(alpha: float, state: dict[str, Any] | None) -> Any:
        if not state:
            return gr.skip()
        with ctx.user_errors():
            return render_overlay(state["image"], state["labels"], state["names"], alpha)

    inputs, outputs = [image, vocabulary, opacity], [overlay, legend, table, files, last]
    limits = {"concurrency_limit": ctx.concurrency, "concurrency_id": MODEL_CONCURRENCY_ID}
    run.click(segment, inputs, outputs, api_name="segment", **limits)
    vocabulary.submit(segment, inputs, outputs, api_visibility="private", **limits)
    opacity.release(
        recolour, [opacity, last], [overlay], api_visibility="private", show_progress="hidden"
    )


TAB = TabSpec(
    key="semantic",
    title="Semantic segmentation",
    task=SEMANTIC_TASK,
    make_handler=SemanticHandler,
    build=build,
)
