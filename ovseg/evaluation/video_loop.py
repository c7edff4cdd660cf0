"""Running a video pipeline over YouTube-VIS-layout data and scoring it.

* ``video_instance`` pipelines: every clip is tracked with the pipeline's vocabulary; each
  predicted track (class: its score-weighted vote, :func:`ovseg.tracks.vote_label`; score: its
  mean per-frame score) whose class name is a category of the data
  is scored against the ground-truth tracks with track AP (:func:`~ovseg.evaluation.video.track_ap`);
  tracks of other names (e.g. stuff classes) are dropped.
* ``video_referring`` pipelines: every annotated object is tracked with its category name as
  the phrase; the union of the phrase's tracks on a frame is its mask, scored with J&F over all
  frames of the clip (:func:`~ovseg.evaluation.video.j_and_f`; no frame is given, so none is
  skipped).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ovseg.data.ytvis import read_ytvis
from ovseg.errors import ConfigError
from ovseg.evaluation.video import VideoTrack, j_and_f, track_ap
from ovseg.tracks import vote_label

__all__ = ["evaluate_video"]


def _frame_positions(video: Any) -> dict[str, int]:
    return {path.name: t for t, path in enumerate(video.frames)}


def evaluate_video(
    pipeline: Any,
    data_json: str | os.PathLike,
    frames_root: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    progress: bool = False,
    class_agnostic: bool = False,
) -> dict[str, Any]:
    """Metrics of ``pipeline`` (a ``VideoSegmenter``) on the clips of ``data_json``.

    ``class_agnostic`` (instance task): every track, predicted or true, counts as one class
    ``object``, so the AP measures the masks and the tracking alone (a diagnostic, not the
    YouTube-VIS metric)."""
    videos, categories = read_ytvis(data_json, frames_root)
    videos = videos[:limit] if limit else videos
    iterator: Any = videos
    if progress:
        from tqdm import tqdm

        iterator = tqdm(videos, desc="clips")
    settings = {
        key: getattr(pipeline, key, None)
        for key in ("propagation", "redetect_every", "match_threshold", "matching", "patience")
    }
    if pipeline.task == "instance":
        ids_by_name = {name: cid for cid, name in categories.items()}
        predictions, truth = [], []
        for video in iterator:
            positions = _frame_positions(video)
            truth += [VideoTrack(video.id, o.category_id, o.masks()) for o in video.objects]
            tracks: dict[int, dict[str, Any]] = {}
            for result in pipeline.track(video.folder):
                t = positions[result.name]
                for i, track_id in enumerate(result.track_ids):
                    entry = tracks.setdefault(int(track_id), {"masks": {}, "frames": []})
                    entry["masks"][t] = result.masks[i]
                    entry["frames"].append(
                        {"label": int(result.labels[i]), "score": float(result.scores[i])}
                    )
                    entry["names"] = result.class_names
            for entry in tracks.values():
                entry["name"] = entry["names"][vote_label(entry["frames"])]
                entry["s"] = [f["score"] for f in entry["frames"]]
                if entry["name"] in ids_by_name:
                    predictions.append(
                        VideoTrack(
                            video.id,
                            ids_by_name[entry["name"]],
                            entry["masks"],
                            float(np.mean(entry["s"])),
                        )
                    )
        if class_agnostic:
            predictions = [VideoTrack(t.video, 0, t.masks, t.score) for t in predictions]
            truth = [VideoTrack(t.video, 0, t.masks) for t in truth]
            categories = {0: "object", **categories}
        metrics = track_ap(predictions, truth)
        metrics["per_category"] = {categories[c]: v for c, v in metrics["per_category"].items()}
        metrics["class_agnostic"] = class_agnostic
        counts = {"clips": len(videos), "gt_tracks": len(truth), "pred_tracks": len(predictions)}
        return {"task": "video_instance", **settings, **counts, **metrics}
    if pipeline.task != "referring":
        raise ConfigError(f"Cannot evaluate a video pipeline of task {pipeline.task!r}.")
    objects = {}
    for video in iterator:
        positions = _frame_positions(video)
        for obj in video.objects:
            size = (video.height, video.width)
            preds = [np.zeros(size, dtype=bool) for _ in video.frames]
            for result in pipeline.track(video.folder, obj.name):
                if len(result):
                    preds[positions[result.name]] = result.masks.any(axis=0)
            gts = [obj.mask(t) for t in range(len(video.frames))]
            objects[f"{video.id}:{obj.id}"] = (preds, gts)
    metrics = j_and_f(objects)
    per_object = metrics.pop("per_object")
    return {
        "task": "video_referring",
        **settings,
        "clips": len(videos),
        "objects": len(per_object),
        **metrics,
    }
