"""Reasoning segmentation tab: image + question -> the generated answer and one mask per
``[SEG]`` of it, drawn with the SasP points that prompted SAM, a row per mask and downloads.

API endpoint ``/reason``: ``(image, question) -> (answer, note, overlay image or None, mask
table, [results JSON, mask PNGs, overlay PNG])``. The overlay has the input's width and the
answer written above it; it is None when the answer has no ``[SEG]`` (the note says so).
"""

from __future__ import annotations

import gradio as gr

from ovseg.demo.handlers import (
    MAX_QUESTION_CHARS,
    REASONING_HEADERS,
    REASONING_TASK,
    ReasoningHandler,
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

QUESTION_HELP = "A question about the image; ask for a mask: '... Please output segmentation mask.'"


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    ctx.handler(spec)  # built now: a bad config fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image(key)
            question = gr.Textbox(
                value="",
                label="Question",
                info=QUESTION_HELP,
                lines=2,
                max_lines=6,
                max_length=MAX_QUESTION_CHARS,
                elem_id=f"{key}-question",
            )
            run = gr.Button("Ask", variant="primary", elem_id=f"{key}-run")
            example_scenes(ctx, key, image)
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False, elem_id=f"{key}-answer")
            note = gr.Markdown(elem_id=f"{key}-note")
            overlay = result_image(
                key, "overlay", "Masks and their points (green positive, red negative)"
            )
            table = gr.Dataframe(
                headers=REASONING_HEADERS,
                datatype=["number", "number", "number", "str"],
                interactive=False,
                label="Masks (score: SAM's predicted IoU)",
                elem_id=f"{key}-table",
            )
            files = downloads(key, "Downloads (results JSON, mask PNGs, overlay PNG)")

    def reason(image_path: str | None, text: str, request: gr.Request) -> tuple:
        with ctx.user_errors():
            handler: ReasoningHandler = ctx.handler(spec)
            out = handler.run(image_path, text, out_dir=ctx.files.directory(session_id(request)))
        return out.answer, out.note, out.overlay, out.table, [str(p) for p in out.files]

    inputs, outputs = [image, question], [answer, note, overlay, table, files]
    run.click(reason, inputs, outputs, api_name="reason", **model_event_limits(ctx))


TAB = TabSpec(
    key="reasoning",
    title="Reasoning",
    task=REASONING_TASK,
    make_handler=ReasoningHandler,
    build=build,
    optional=True,
)
