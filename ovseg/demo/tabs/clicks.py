"""Click-to-segment tab: clicks on the image (positive / negative) -> SAM's mask named by CLIP
with the vocabulary. Every click runs the model again from the kept image embedding.

API endpoint ``/segment_clicks``: ``(image, clicks, vocabulary) -> (mask image, instance table,
[results JSON, instance-id PNG, overlay PNG])``. ``clicks`` is JSON text ``[[x, y, label], ...]``:
the clicked pixel's column and row, label 1 positive or 0 negative. The image has the input's
size.
"""

from __future__ import annotations

import gradio as gr

from ovseg.demo.handlers import (
    CLICK_LABELS,
    INSTANCE_TASK,
    ClickHandler,
    add_click,
)
from ovseg.demo.tabs.base import (
    DemoContext,
    TabSpec,
    default_vocabulary,
    example_scenes,
    instance_outputs,
    model_event_limits,
    result_image,
    session_id,
    upload_image,
    vocabulary_box,
)

CLICKS_HELP = "One [x, y, label] per click: pixel column and row; label 1 positive, 0 negative."
NO_CLICKS = "[]"


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    handler: ClickHandler = ctx.handler(spec)  # built now: a bad config fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image(key, "Image (click to add a point)")
            mode = gr.Radio(
                list(CLICK_LABELS),
                value="positive",
                label="Next click",
                info="positive: part of the object; negative: not part of it",
                elem_id=f"{key}-mode",
            )
            vocabulary = vocabulary_box(key, default_vocabulary(ctx, handler.default_vocabulary()))
            clicks = gr.Textbox(
                value=NO_CLICKS,
                label="Points",
                info=CLICKS_HELP,
                lines=1,
                max_lines=3,
                max_length=4000,
                elem_id=f"{key}-points",
            )
            with gr.Row():
                run = gr.Button("Segment", variant="primary", elem_id=f"{key}-run")
                clear = gr.Button("Clear points", elem_id=f"{key}-clear")
            example_scenes(ctx, key, image, vocabulary, "vocabulary")
        with gr.Column(scale=1):
            overlay = result_image(key, "overlay", "Mask, its name and the points")
            table, files = instance_outputs(key, "Named mask (area in pixels)")

    def click(points: str, click_mode: str, event: gr.SelectData) -> str:
        with ctx.user_errors():
            x, y = event.index  # the clicked pixel's (column, row)
            return add_click(points, x, y, click_mode)

    def segment(image_path: str | None, points: str, text: str, request: gr.Request) -> tuple:
        with ctx.user_errors():
            out = ctx.handler(spec).run(
                image_path, points, text, out_dir=ctx.files.directory(session_id(request))
            )
        return out.overlay, out.table, [str(p) for p in out.files]

    def forget_clicks() -> tuple:
        return NO_CLICKS, None, [], None

    outputs = [overlay, table, files]
    limits = model_event_limits(ctx)
    image.select(
        click, [clicks, mode], [clicks], api_visibility="private", show_progress="hidden"
    ).success(segment, [image, clicks, vocabulary], outputs, api_visibility="private", **limits)
    run.click(segment, [image, clicks, vocabulary], outputs, api_name="segment_clicks", **limits)
    cleared = [clicks, overlay, table, files]
    clear.click(forget_clicks, None, cleared, api_visibility="private", show_progress="hidden")
    image.change(forget_clicks, None, cleared, api_visibility="private", show_progress="hidden")


TAB = TabSpec(
    key="clicks",
    title="Click to segment",
    task=INSTANCE_TASK,
    make_handler=ClickHandler,
    build=build,
    optional=True,
)
