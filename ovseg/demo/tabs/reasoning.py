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
    ReasoningOutput,
)
from ovseg.demo.tabs.base import (
    DemoContext,
    TabSpec,
    downloads,
    model_event_limits,
    prompt_inputs,
    result_image,
    result_table,
    run_prompted,
)

QUESTION_HELP = "A question about the image; ask for a mask: '... Please output segmentation mask.'"


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    ctx.handler(spec)  # built now: a bad config fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image, question, run = prompt_inputs(
                ctx,
                key,
                name="question",
                label="Question",
                info=QUESTION_HELP,
                lines=2,
                max_lines=6,
                max_length=MAX_QUESTION_CHARS,
                button="Ask",
            )
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False, elem_id=f"{key}-answer")
            note = gr.Markdown(elem_id=f"{key}-note")
            overlay = result_image(
                key, "overlay", "Masks and their points (green positive, red negative)"
            )
            table = result_table(
                key,
                REASONING_HEADERS,
                ["number", "number", "number", "str"],
                "Masks (score: SAM's predicted IoU)",
            )
            files = downloads(key, "Downloads (results JSON, mask PNGs, overlay PNG)")

    def reason(image_path: str | None, text: str, request: gr.Request) -> tuple:
        out: ReasoningOutput = run_prompted(ctx, spec, image_path, text, request)
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
