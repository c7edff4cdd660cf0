"""Referring segmentation tab: image + phrase -> SAM's mask with its point prompts, the phrase's
similarity map, a result row and downloads.

API endpoint ``/refer``: ``(image, phrase) -> (mask-and-points image, similarity image, result
table, [results JSON, mask PNG, similarity PNG, overlay PNG])``. Both images have the input's
size. The image is embedded once; another phrase for it only encodes the text.
"""

from __future__ import annotations

import gradio as gr

from ovseg.demo.handlers import (
    MAX_PHRASE_CHARS,
    REFERRING_HEADERS,
    REFERRING_TASK,
    ReferringHandler,
    ReferringOutput,
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

PHRASE_HELP = "What to find, in words: 'the red star', 'water'."


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    ctx.handler(spec)  # built now: a bad config fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image, phrase, run = prompt_inputs(
                ctx,
                key,
                name="phrase",
                label="Phrase",
                info=PHRASE_HELP,
                lines=1,
                max_lines=2,
                max_length=MAX_PHRASE_CHARS,
                button="Find",
                value=ctx.examples[0].phrase if ctx.examples else "",
                example_field="phrase",
            )
        with gr.Column(scale=1):
            with gr.Row():
                mask = result_image(
                    key,
                    "mask",
                    "Mask, and its points if any (green positive, red negative, grey neutral)",
                )
                similarity = result_image(
                    key, "similarity", "Where the phrase was found (red high)"
                )
            table = result_table(
                key,
                REFERRING_HEADERS,
                ["str", "number", "number", "str"],
                "Result (score: SAM's predicted IoU)",
            )
            files = downloads(
                key, "Downloads (results JSON, mask PNG, similarity PNG, overlay PNG)"
            )

    def refer(image_path: str | None, text: str, request: gr.Request) -> tuple:
        out: ReferringOutput = run_prompted(ctx, spec, image_path, text, request)
        return out.mask_overlay, out.heat_map, out.table, [str(p) for p in out.files]

    inputs, outputs = [image, phrase], [mask, similarity, table, files]
    limits = model_event_limits(ctx)
    run.click(refer, inputs, outputs, api_name="refer", **limits)
    phrase.submit(refer, inputs, outputs, api_visibility="private", **limits)


TAB = TabSpec(
    key="referring",
    title="Referring segmentation",
    task=REFERRING_TASK,
    make_handler=ReferringHandler,
    build=build,
    optional=True,
)
