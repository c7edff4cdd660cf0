"""What the demo's tabs compute, as plain functions and small caches (no gradio here).

Images are HWC uint8 RGB numpy arrays (or anything :func:`ovseg.io.read_image` takes); label maps
are ``(H, W)`` class indices in vocabulary order, in input-image pixels.

- :class:`PipelineProvider` builds one pipeline per task lazily from the served preset/config.
- :class:`FeatureCache` is a thread-safe LRU; :class:`EncodedImages` keeps a pipeline's encoded
  images (``pipeline.encode(image)`` values) keyed by :func:`image_digest`, so a new vocabulary,
  phrase or click on the same image skips the image encoders. Handlers of tabs that share a
  pipeline share its cache. Requests only call public pipeline methods (``encode``,
  ``predict(encoded, query, **overrides)``, ``segment_clicks``).
- :class:`SemanticHandler` runs semantic segmentation and renders the overlay, legend, table and
  downloadable files; :class:`SessionFiles` gives each browser session its own temporary folder.
- :class:`ReferringHandler` (phrase -> SAM mask, points, similarity), :class:`InstanceHandler`
  (vocabulary -> named instances, re-thresholded without the model), :class:`ClickHandler`
  (clicks -> one SAM mask named with the vocabulary) and :class:`VocabFreeHandler` (names found
  in a text database -> semantic segmentation) and :class:`ReasoningHandler` (question ->
  generated answer and masks) wrap their pipelines through an
  :class:`EncodedImages`, so another prompt on the same image skips the image encoders.
- :class:`VideoHandler` (a short clip + phrase or vocabulary -> overlay MP4, tracks JSON and
  table, under a byte and frame budget) runs the video pipelines of the config.
- :func:`describe_failure` turns an exception into the message a user sees.
"""

from __future__ import annotations

from ovseg.demo.handlers.common import (  # noqa: F401
    CLICK_LABELS,
    EXAMPLE_IMAGE_SUFFIXES,
    FOUND_NAMES_HEADERS,
    INSTANCE_HEADERS,
    INSTANCE_TASK,
    MAX_CLICKS,
    MAX_PHRASE_CHARS,
    MAX_QUESTION_CHARS,
    REASONING_HEADERS,
    REASONING_TASK,
    REFERRING_HEADERS,
    REFERRING_TASK,
    SEMANTIC_TASK,
    TABLE_HEADERS,
    VIDEO_TASK,
    VOCAB_FREE_TASK,
    EncodedImages,
    Example,
    FeatureCache,
    LegendEntry,
    PipelineProvider,
    SessionFiles,
    class_file_text,
    default_examples_dir,
    describe_failure,
    format_box,
    image_digest,
    is_out_of_memory,
    legend_entries,
    legend_html,
    load_examples,
    logger,
    parse_vocabulary,
    read_upload,
    release_accelerator_memory,
    render_overlay,
    require_methods,
    results_table,
    vocabulary_text,
)
from ovseg.demo.handlers.instance import (  # noqa: F401
    ClickHandler,
    ClickOutput,
    InstanceHandler,
    InstanceOutput,
    PackedInstances,
    add_click,
    click_prompts,
    filter_instances,
    instance_rows,
    parse_clicks,
)
from ovseg.demo.handlers.reasoning import (  # noqa: F401
    NO_MASK_NOTE,
    ReasoningHandler,
    ReasoningOutput,
    check_question,
    reasoning_rows,
)
from ovseg.demo.handlers.referring import (  # noqa: F401
    ReferringHandler,
    ReferringOutput,
    check_phrase,
    referring_row,
)
from ovseg.demo.handlers.semantic import (  # noqa: F401
    SemanticHandler,
    SemanticOutput,
    VocabFreeHandler,
    VocabFreeOutput,
)
from ovseg.demo.handlers.video import (  # noqa: F401
    DEFAULT_VIDEO_MAX_BYTES,
    DEFAULT_VIDEO_MAX_FRAMES,
    VIDEO_HEADERS,
    VIDEO_MODES,
    VideoHandler,
    VideoOutput,
    VideoPipelines,
    build_video_pipelines,
    tracks_rows,
)
