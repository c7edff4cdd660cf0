"""Instance segmentation / detection tab: image + vocabulary -> masks with boxes, labels and
scores, a table, downloads, and a score threshold applied without running the model again.

API endpoint ``/detect``: ``(image, vocabulary, score threshold) -> (instances image, instances
table, [results JSON, instance-id PNG, overlay PNG])``. The image has the input's size. The
threshold slider re-filters the session's last result (no model runs).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ovseg.demo.handlers import (
    INSTANCE_TASK,
    InstanceHandler,
    PackedInstances,
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


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    handler: InstanceHandler = ctx.handler(spec)  # built now: a bad config fails before serving
    key = spec.key
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image(key)
            vocabulary = vocabulary_box(key, default_vocabulary(ctx, handler.default_vocabulary()))
            threshold = gr.Slider(
                0.0,
                1.0,
                value=handler.default_threshold,
                step=0.01,
                label="Score threshold",
                info="Instances scoring below it are hidden (the model does not run again).",
                elem_id=f"{key}-threshold",
            )
            run = gr.Button("Detect", variant="primary", elem_id=f"{key}-run")
            example_scenes(ctx, key, image, vocabulary, "vocabulary")
        with gr.Column(scale=1):
            overlay = result_image(key, "overlay", "Instances (mask, box, label and score)")
            table, files = instance_outputs(key, "Instances, best first (area in pixels)")
    last = gr.State(None)  # this session's last image and every instance found in it

    def detect(image_path: str | None, text: str, score: float, request: gr.Request) -> tuple:
        with ctx.user_errors():
            out = ctx.handler(spec).run(
                image_path,
                text,
                score_threshold=score,
                out_dir=ctx.files.directory(session_id(request)),
            )
        state = {
            "image": out.image,
            "instances": PackedInstances.pack(out.instances),
            "stem": out.stem,
        }
        return out.overlay, out.table, [str(p) for p in out.files], state

    def refilter(score: float, state: dict[str, Any] | None, request: gr.Request) -> Any:
        if not state:
            return gr.skip(), gr.skip(), gr.skip()
        with ctx.user_errors():
            out = InstanceHandler.render(
                state["image"],
                state["instances"].unpack(),
                score,
                out_dir=ctx.files.directory(session_id(request)),
                stem=state["stem"],
            )
        return out.overlay, out.table, [str(p) for p in out.files]

    inputs, outputs = [image, vocabulary, threshold], [overlay, table, files, last]
    limits = model_event_limits(ctx)
    run.click(detect, inputs, outputs, api_name="detect", **limits)
    vocabulary.submit(detect, inputs, outputs, api_visibility="private", **limits)
    threshold.release(
        refilter,
        [threshold, last],
        [overlay, table, files],
        api_visibility="private",
        show_progress="hidden",
    )


TAB = TabSpec(
    key="instance",
    title="Instances / detection",
    task=INSTANCE_TASK,
    make_handler=InstanceHandler,
    build=build,
    optional=True,
)
