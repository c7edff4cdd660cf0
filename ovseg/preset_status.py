"""Which presets run with what is installed, per task, without building a model.

A preset's sections name their weights (``ClipBackbone`` and ``ScClipBackbone``: ``pretrained``
tag or ``checkpoint``; ``SamDecoder``: ``pretrained`` tag, ``checkpoint`` or the official
release; ``Sam2Decoder``: ``checkpoint`` or the SAM 2.1 release file in torch hub's folder;
``DenseCLIPSegmenter``: ``weights`` or a packaged ``pretrained`` tag). Each is looked up where
the model would find it (packaged files, the Hugging Face cache, torch hub's cache, local
paths), reading no weight file. ``ovseg list`` prints the result.

The shipped presets are checked without importing torch or open_clip (``ovseg list`` answers at
once): :data:`CLIP_TAG_SOURCES` holds where open_clip publishes the tags they use,
:mod:`ovseg.model_zoo.sam_release` the released SAM files, and the database module is imported
only for sections that need it; detector and READ folders are looked up in the Hugging Face
cache or on disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovseg.config import list_presets, load_config, to_container
from ovseg.errors import OVSegError
from ovseg.model_zoo.denseclip_files import DENSECLIP_RELEASES, release_path
from ovseg.model_zoo.embedded import (
    EMBEDDED_FOLDERS,
    EMBEDDED_PREFIX,
    EMBEDDED_WEIGHTS,
    WEIGHTS_DIR,
)
from ovseg.model_zoo.mdetr_release import (
    MDETR_RELEASES,
    MDETR_TOKENIZER,
    release_candidates,
    release_url,
)
from ovseg.model_zoo.sam_release import (
    OFFICIAL_CHECKPOINTS,
    OFFICIAL_TAG,
    official_checkpoint_path,
)

TASK_ORDER = (
    "semantic",
    "semantic_painted",
    "referring",
    "referring_sasp",
    "referring_grounded",
    "instance",
    "instance_grounded",
    "instance_sam",
    "detection",
    "reasoning",
    "vocab-free",
)

#: ``(model_name, tag) -> (Hugging Face repo, candidate file names)`` as open_clip's tag table and
#: ``clip_weights`` resolve them, for the tags the shipped presets name; tests check every entry
#: against open_clip. Other tags are looked up in open_clip itself.
CLIP_TAG_SOURCES: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("ViT-B-16", "openai"): (
        "timm/vit_base_patch16_clip_224.openai",
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    ),
    ("ViT-L-14", "openai"): (
        "timm/vit_large_patch14_clip_224.openai",
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    ),
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): (
        "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    ),
}


@dataclass(frozen=True)
class WeightStatus:
    """One weight file a task needs: ``what`` it is, ``where`` it was found (None: missing) and
    how to get it when missing (``fetch``)."""

    what: str
    where: str | None
    fetch: str = ""


@dataclass
class PresetStatus:
    """``tasks``: task name -> the weights it needs (``semantic``, ``referring``, ``instance``,
    ``vocab-free``); ``error``: why the preset could not be read, if it could not."""

    name: str
    tasks: dict[str, list[WeightStatus]] = field(default_factory=dict)
    error: str | None = None

    def ready(self, task: str) -> bool:
        return self.error is None and all(w.where is not None for w in self.tasks[task])

    def missing(self, task: str) -> list[WeightStatus]:
        return [w for w in self.tasks.get(task, []) if w.where is None]


def _embedded(model_name: str, tag: str | None) -> bool:
    entry = EMBEDDED_WEIGHTS.get((model_name, tag or ""))
    return entry is not None and (WEIGHTS_DIR / entry["file"]).is_file()


def _local_file(what: str, path: Any) -> WeightStatus:
    found = Path(str(path)).expanduser().exists()
    return WeightStatus(what, "local file" if found else None, f"the file {path}")


def _cached_hf_file(repo: str, filenames: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str) and Path(cached).is_file():
            return True
    return False


def _clip(section: Mapping[str, Any]) -> WeightStatus:
    model, tag = section.get("model_name", "?"), section.get("pretrained")
    what = f"CLIP {model} / {tag}"
    if section.get("checkpoint"):
        return _local_file(f"CLIP {model}", section["checkpoint"])
    if not tag:
        return WeightStatus(f"CLIP {model}", "random weights (no tag given)")
    if _embedded(model, tag):
        return WeightStatus(what, "embedded")
    known = CLIP_TAG_SOURCES.get((model, tag))
    if known is not None:  # the shipped presets' tags: no open_clip import
        repo, filenames = known
        if _cached_hf_file(repo, filenames):
            return WeightStatus(what, "Hugging Face cache")
        return WeightStatus(what, None, f"hf download {repo} {filenames[0]}")
    from ovseg.models.backbones.clip_weights import find_cached_pretrained, pretrained_source

    try:
        cached, _ = find_cached_pretrained(model, tag)
    except OVSegError:
        return WeightStatus(what, None, "a tag open_clip does not know")
    if cached is not None:
        return WeightStatus(what, "Hugging Face cache")
    repo_file = pretrained_source(model, tag)
    repo, _, name = repo_file.rpartition("/")
    fetch = f"hf download {repo} {name}" if repo and "://" not in repo_file else repo_file
    return WeightStatus(what, None, fetch)


def _sam(section: Mapping[str, Any]) -> WeightStatus:
    model = section.get("model_type", "vit_b")
    if not isinstance(model, str):
        model = "custom"
    if section.get("checkpoint"):
        return _local_file(f"SAM {model}", section["checkpoint"])
    if section.get("pretrained") and _embedded(model, section["pretrained"]):
        return WeightStatus(f"SAM {model} / {section['pretrained']}", "embedded")
    tag = section.get("pretrained") or (OFFICIAL_TAG if model in OFFICIAL_CHECKPOINTS else None)
    what = f"SAM {model} / {tag}"
    if _embedded(model, tag):
        return WeightStatus(what, "embedded")
    if tag == OFFICIAL_TAG and model in OFFICIAL_CHECKPOINTS:
        path = official_checkpoint_path(model)
        found = "torch hub cache" if path.is_file() else None
        return WeightStatus(what, found, f"{OFFICIAL_CHECKPOINTS[model]['url']} -> {path}")
    return WeightStatus(what, None, "a checkpoint (pipelines.<task>.decoder.checkpoint=PATH)")


#: SAM 2.1 release files by model type (aliases included), as ``sam2_build.SAM2_MODELS`` names
#: them (tests check the two agree), so ``ovseg list`` needs no torch for them
SAM2_RELEASE_FILES: dict[str, str] = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
}
SAM2_RELEASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    import os

    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def _sam2(section: Mapping[str, Any]) -> WeightStatus:
    model = str(section.get("model_type", "sam2.1_hiera_t"))
    if section.get("checkpoint"):
        return _local_file(f"SAM 2 {model}", section["checkpoint"])
    short = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
    prefix, _, size = model.rpartition("_")
    name = f"{prefix}_{short.get(size, size)}"
    if name not in SAM2_RELEASE_FILES:
        return WeightStatus(f"SAM 2 {model}", None, "a checkpoint (decoder.checkpoint=PATH)")
    file = SAM2_RELEASE_FILES[name]
    path = torch_hub_dir() / "checkpoints" / file
    found = "torch hub cache" if path.is_file() else None
    return WeightStatus(f"SAM 2 {name}", found, f"{SAM2_RELEASE_URL}/{file} -> {path}")


def _denseclip(section: Mapping[str, Any]) -> WeightStatus:
    release = section.get("release")
    if release in DENSECLIP_RELEASES:
        entry = DENSECLIP_RELEASES[release]
        what = f"DenseCLIP release {release} ({entry['file']})"
        path = Path(str(section["weights"])).expanduser() if section.get("weights") else None
        path = path or release_path(release)
        found = "local file" if section.get("weights") else "torch hub cache"
        return WeightStatus(what, found if path.is_file() else None, f"{entry['url']} -> {path}")
    if section.get("weights"):
        return _local_file("DenseCLIP export", section["weights"])
    model = (section.get("model") or {}).get("model_name", "?")
    tag = section.get("pretrained")
    what = f"DenseCLIP {model} / {tag}"
    if _embedded(f"denseclip-{model}", tag):
        return WeightStatus(what, "embedded")
    return WeightStatus(what, None, "a trained export (pipeline.weights=PATH)")


def _hf_folder(what: str, path: Any, repo: Any, setting: str) -> WeightStatus:
    """A Hugging Face model folder: a local path, or the cache's copy of ``repo``."""
    if isinstance(path, str) and path.startswith(EMBEDDED_PREFIX):
        entry = EMBEDDED_FOLDERS.get(path[len(EMBEDDED_PREFIX) :], {})
        present = bool(entry.get("sha256")) and all(
            (WEIGHTS_DIR / entry["folder"] / f).is_file() for f in entry["sha256"]
        )
        return WeightStatus(f"{what} {path}", "embedded" if present else None, "reinstall ovseg")
    if path:
        found = (Path(str(path)).expanduser() / "config.json").is_file()
        return WeightStatus(what, "local folder" if found else None, f"the folder {path}")
    if not repo:
        return WeightStatus(what, None, f"a folder ({setting}=DIR)")
    if _cached_hf_file(str(repo), ("config.json",)):
        return WeightStatus(f"{what} {repo}", "Hugging Face cache")
    return WeightStatus(f"{what} {repo}", None, f"hf download {repo} (or {setting}=DIR)")


def _reasoning(section: Mapping[str, Any]) -> Iterator[WeightStatus]:
    yield _hf_folder(
        "READ", section.get("weights"), section.get("hf_repo"), "pipelines.reasoning.weights"
    )
    tower = section.get("vision_tower")
    if isinstance(tower, str) and tower.startswith("open_clip:"):
        name, _, tag = tower[len("open_clip:") :].partition("@")
        yield _clip({"model_name": name, "pretrained": tag or None})
    else:
        yield _hf_folder(
            "CLIP vision tower",
            tower,
            section.get("vision_tower_repo"),
            "pipelines.reasoning.vision_tower",
        )


def _detector(section: Mapping[str, Any]) -> WeightStatus:
    model = str(section.get("model", "?"))
    what = f"{section.get('type')} {model}"
    path = Path(model).expanduser()
    if path.is_dir():
        return WeightStatus(what, "local folder")
    if model.count("/") == 1 and _cached_hf_file(model, ("model.safetensors", "pytorch_model.bin")):
        return WeightStatus(what, "Hugging Face cache")
    return WeightStatus(what, None, f"hf download {model}")


def _mdetr(section: Mapping[str, Any]) -> Iterator[WeightStatus]:
    model = str(section.get("model", "mdetr_resnet101"))
    if section.get("checkpoint"):
        yield _local_file(f"MDETR {model}", section["checkpoint"])
    elif model not in MDETR_RELEASES:
        yield WeightStatus(f"MDETR {model}", None, f"a release name ({', '.join(MDETR_RELEASES)})")
    else:
        candidates = release_candidates(model)
        found = "torch hub cache" if any(p.is_file() for p in candidates) else None
        yield WeightStatus(f"MDETR {model}", found, f"{release_url(model)} -> {candidates[0]}")
    tokenizer = str(section.get("tokenizer", MDETR_TOKENIZER))
    what = f"MDETR tokenizer {tokenizer}"
    if Path(tokenizer).expanduser().is_dir():
        yield WeightStatus(what, "local folder")
    elif any(_cached_hf_file(r, ("merges.txt",)) for r in (tokenizer, f"FacebookAI/{tokenizer}")):
        yield WeightStatus(what, "Hugging Face cache")
    else:
        yield WeightStatus(what, None, f"hf download {tokenizer} vocab.json merges.txt")


def _clip_owl(section: Mapping[str, Any]) -> Iterator[WeightStatus]:
    """``ClipOwlDetector``: its trained heads and tower, and the CLIP of its text tower."""
    model, tag = section.get("model_name", "ovseg-ViT-Ti-8"), section.get("pretrained", "shapes")
    if section.get("checkpoint"):
        yield _local_file(f"OWL detector {model}", section["checkpoint"])
    elif _embedded(f"owl-{model}", tag):
        yield WeightStatus(f"OWL detector {model} / {tag}", "embedded")
    else:
        yield WeightStatus(
            f"OWL detector {model} / {tag}",
            None,
            "a trained OwlDetection export (detector.checkpoint=PATH)",
        )
    yield _clip(
        {
            "model_name": model,
            "pretrained": section.get("clip_pretrained", "shapes"),
            "checkpoint": section.get("clip_checkpoint"),
        }
    )


_DETECTOR_TYPES = (
    "OwlViTDetector",
    "owlvit",
    "Owlv2Detector",
    "owlv2",
    "GroundingDinoDetector",
    "grounding_dino",
)
_CHECKS = {
    "ClipBackbone": _clip,
    "ScClipBackbone": _clip,  # CLIP alone, the same weight keys
    "SamDecoder": _sam,
    "Sam2Decoder": _sam2,
    "DenseCLIPSegmenter": _denseclip,
    **dict.fromkeys(_DETECTOR_TYPES, _detector),
}
_MULTI_CHECKS = {
    "ReasoningSegmenter": _reasoning,
    "MdetrDetector": _mdetr,
    "mdetr": _mdetr,
    "ClipOwlDetector": _clip_owl,
    "clip_owl": _clip_owl,
}


def _weights(node: Any) -> Iterator[WeightStatus]:
    if isinstance(node, Mapping):
        check = _CHECKS.get(str(node.get("type")))
        if check is not None:
            yield check(node)
        several = _MULTI_CHECKS.get(str(node.get("type")))
        if several is not None:
            yield from several(node)
        for value in node.values():
            yield from _weights(value)
    elif isinstance(node, list):
        for value in node:
            yield from _weights(value)


def _unique(items: Iterator[WeightStatus]) -> list[WeightStatus]:
    return list(dict.fromkeys(items))


def _database_status(section: Any, preset: str) -> WeightStatus:
    from ovseg.cased.database import DATABASE_DIR, MANIFEST_NAME, resolve_database_path

    path = section.get("path") if isinstance(section, Mapping) else section
    build = f"ovseg db build --texts CAPTIONS --preset {preset} --out"
    if not path:
        return WeightStatus("text database", None, f"--db DIR (`{build} DIR`)")
    folder = resolve_database_path(str(path))
    if not (folder / MANIFEST_NAME).is_file():
        return WeightStatus(
            f"text database {path}",
            None,
            f"`{build} {path}` (CAPTIONS: a caption file, e.g. the PMD recipe of "
            "docs/vocab_free.md)",
        )
    packaged = folder.resolve().parent == DATABASE_DIR.resolve()
    return WeightStatus(f"text database {path}", "packaged database" if packaged else "local")


def preset_status(name: str) -> PresetStatus:
    """The tasks preset ``name`` has and, for each, the weights it needs and where they are."""
    status = PresetStatus(name)
    try:
        cfg = to_container(load_config(name))
    except OVSegError as exc:
        status.error = str(exc)
        return status
    if isinstance(cfg.get("pipeline"), Mapping):
        status.tasks["semantic"] = _unique(_weights(cfg["pipeline"]))
    for task, section in (cfg.get("pipelines") or {}).items():
        status.tasks[str(task)] = _unique(_weights(section))
    if cfg.get("database") and "semantic" in status.tasks:
        database = _database_status(cfg["database"], name)
        status.tasks["vocab-free"] = [*status.tasks["semantic"], database]
    return status


def all_preset_status() -> list[PresetStatus]:
    return [preset_status(name) for name in list_presets()]


def format_presets(statuses: list[PresetStatus]) -> str:
    """The ``ovseg list presets`` text: one section per task, each preset ready or what it needs."""
    tasks = [t for t in TASK_ORDER if any(t in s.tasks for s in statuses)]
    tasks += sorted({t for s in statuses for t in s.tasks} - set(tasks))
    width = max((len(s.name) for s in statuses), default=0) + 2
    lines = ["Presets by task ('ready': runs with what is installed; 'needs': what to fetch)"]
    for task in tasks:
        lines.append(f"{task}:")
        for status in statuses:
            if task not in status.tasks:
                continue
            if status.ready(task):
                found = sorted({w.where for w in status.tasks[task] if w.where})
                lines.append(f"  {status.name:<{width}}ready ({', '.join(found) or 'no weights'})")
            else:
                needs = "; ".join(f"{w.what}: {w.fetch}" for w in status.missing(task))
                lines.append(f"  {status.name:<{width}}needs {needs}")
    broken = [s for s in statuses if s.error]
    if broken:
        lines.append("unreadable:")
        lines += [f"  {s.name:<{width}}{s.error}" for s in broken]
    return "\n".join(lines)
