"""Vocabulary-free semantic segmentation tab: image -> the names found for it in the served
config's text database (with their scores), and the segmentation with them: overlay, legend,
per-class table, downloads.

Shown only when the config has a ``database:`` section. API endpoint ``/segment_vocab_free``:
``(image) -> (overlay image, legend HTML, found names table, classes table, [results JSON,
label PNG, overlay PNG])``. The overlay has the input's size.
"""

from __future__ import annotations

import gradio as gr

from ovseg.demo.handlers import (
    FOUND_NAMES_HEADERS,
    TABLE_HEADERS,
    VOCAB_FREE_TASK,
    VocabFreeHandler,
)
from ovseg.demo.tabs.base import (
    DemoContext,
    TabSpec,
    downloads,
    example_scenes,
    model_event_limits,
    result_image,
    session_id,
    upload_image,
)


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    ctx.handler(spec)  # built now: a bad config or database fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image(key)
            run = gr.Button("Find names and segment", variant="primary", elem_id=f"{key}-run")
            example_scenes(ctx, key, image)
            names = gr.Dataframe(
                headers=FOUND_NAMES_HEADERS,
                datatype=["str", "number"],
                interactive=False,
                label="Names found in the database (search score)",
                elem_id=f"{key}-names",
            )
        with gr.Column(scale=1):
            overlay = result_image(key, "overlay", "Overlay")
            legend = gr.HTML(label="Legend", elem_id=f"{key}-legend")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["str", "number", "number", "number"],
                interactive=False,
                label="Classes",
                elem_id=f"{key}-table",
            )
            files = downloads(key, "Downloads (results JSON, label PNG, overlay PNG)")

    def segment(image_path: str | None, request: gr.Request) -> tuple:
        with ctx.user_errors():
            out = ctx.handler(spec).run(
                image_path, out_dir=ctx.files.directory(session_id(request))
            )
        return out.overlay, out.legend_html, out.names, out.table, [str(p) for p in out.files]

    outputs = [overlay, legend, names, table, files]
    run.click(segment, [image], outputs, api_name="segment_vocab_free", **model_event_limits(ctx))


TAB = TabSpec(
    key="vocab-free",
    title="Vocabulary-free",
    task=VOCAB_FREE_TASK,
    make_handler=VocabFreeHandler,
    build=build,
    optional=True,
)
