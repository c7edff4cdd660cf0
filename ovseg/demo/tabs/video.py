"""Video tab: a short clip and a phrase (referring) or a vocabulary (instance) -> the tracks.

API endpoint ``/track_video``: ``(clip, mode, text) -> (overlay MP4, tracks table, [tracks
JSON, overlay MP4])``; ``mode`` is a label of :data:`~ovseg.demo.handlers.VIDEO_MODES` that the
served config has a pipeline for, ``text`` the phrase or the vocabulary. Clips over the
handler's byte or frame budget are refused with a message before a frame is decoded.
"""

from __future__ import annotations

import gradio as gr

from ovseg.demo.handlers import VIDEO_HEADERS, VIDEO_TASK, VideoHandler
from ovseg.demo.tabs.base import (
    DemoContext,
    TabSpec,
    downloads,
    model_event_limits,
    session_id,
)

TEXT_HELP = (
    "The phrase to follow (referring), or the classes (instance): separated by commas, "
    "synonyms of one class by '|'."
)


def build(ctx: DemoContext, spec: TabSpec) -> None:
    """Components and events of the tab (inside the open ``gr.Tab``)."""
    handler: VideoHandler = ctx.handler(spec)  # built now: a bad config fails before serving
    handler.limit(ctx.video_max_bytes, ctx.video_max_frames)
    key = spec.key
    modes = handler.modes
    with gr.Row():
        with gr.Column(scale=1):
            clip = gr.Video(
                label="Clip",
                sources=["upload"],
                format=None,
                elem_id=f"{key}-clip",
            )
            gr.Markdown(
                f"At most {handler.max_bytes / 2**20:.0f} MiB and {handler.max_frames} frames.",
                elem_id=f"{key}-budget",
            )
            mode = gr.Radio(modes, value=modes[0], label="Mode", elem_id=f"{key}-mode")
            text = gr.Textbox(
                value="",
                label="Phrase or vocabulary",
                info=TEXT_HELP,
                lines=1,
                max_lines=4,
                max_length=4000,
                elem_id=f"{key}-text",
            )
            run = gr.Button("Track", variant="primary", elem_id=f"{key}-run")
        with gr.Column(scale=1):
            overlay = gr.Video(label="Tracks", interactive=False, elem_id=f"{key}-overlay")
            table = gr.Dataframe(
                headers=VIDEO_HEADERS,
                datatype=["number", "str", "number", "number", "number", "number"],
                interactive=False,
                label="Tracks",
                elem_id=f"{key}-table",
            )
            files = downloads(key, "Downloads (tracks JSON, overlay MP4)")

    def track_video(video: str | None, mode_label: str, query: str, request: gr.Request) -> tuple:
        with ctx.user_errors():
            out = handler.run(
                video, mode_label, query, out_dir=ctx.files.directory(session_id(request))
            )
        return str(out.overlay), out.table, [str(p) for p in out.files]

    inputs, outputs = [clip, mode, text], [overlay, table, files]
    run.click(track_video, inputs, outputs, api_name="track_video", **model_event_limits(ctx))


TAB = TabSpec(
    key="video",
    title="Video",
    task=VIDEO_TASK,
    make_handler=VideoHandler,
    build=build,
    optional=True,
)
