"""Weights shipped inside the package, addressed like open_clip tags: ``(model_name, tag)``.

Each entry names its file in ``ovseg/model_zoo/weights``, the sha256 the file must have, and the
commands that reproduce it. ``ClipBackbone(model_name, pretrained=tag)`` finds them here before
asking open_clip's own tag table, and ``SamDecoder(model_type, pretrained=tag)`` (e.g.
``("ovseg-sam-tiny", "shapes")``) before SAM's official release, and
``ClipOwlDetector(model_name, pretrained=tag)`` finds its detector under ``("owl-" + model_name,
tag)``.
"""

from __future__ import annotations

from pathlib import Path

from ovseg.errors import WeightsNotFoundError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TOKENIZERS_DIR = Path(__file__).resolve().parent / "tokenizers"
PACKAGED_TOKENIZERS: dict[str, str] = {
    "shapes-bpe": "python tools/train_tokenizer.py ovseg/model_zoo/tokenizers/shapes-bpe",
}

EMBEDDED_WEIGHTS: dict[tuple[str, str], dict[str, str]] = {
    ("ovseg-ViT-Ti-8", "shapes"): {
        "file": "ovseg-ViT-Ti-8-shapes.safetensors",
        "sha256": "0b770b7a56f7398cf4d473682433735d50c4ab486af05042f60a67ab60b99731",
        "recipe": (
            "ovseg data synth --out data/synth --num 8000 --num-val 500 --seed 0 && "
            "ovseg train configs/clip/shapes_tiny_clip.yaml && "
            "python tools/export_weights.py work_dirs/shapes_tiny_clip/model_final.safetensors "
            "ovseg/model_zoo/weights/ovseg-ViT-Ti-8-shapes.safetensors"
        ),
    },
    ("denseclip-ovseg-ViT-Ti-8", "shapes"): {
        "file": "ovseg-ViT-Ti-8-shapes-denseclip.safetensors",
        "sha256": "dc0d006a48f0aa38786e777477e5624eb24af7e62ee6bd19c311e1da6fb59d1b",
        "recipe": (
            "ovseg data synth --out data/synth_pairs --num 8000 --num-val 0 --seed 3 "
            "--formats ade20k --neighbour-fraction 0.5 && "
            "ovseg train configs/shapes/shapes_tiny_denseclip.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_denseclip/model_final.safetensors "
            "work_dirs/shapes_tiny_denseclip/model_fp16.safetensors && "
            "ovseg train configs/shapes/shapes_tiny_denseclip_ft.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_denseclip_ft/model_final.safetensors "
            "work_dirs/shapes_tiny_denseclip_ft/model_fp16.safetensors && "
            "ovseg train configs/shapes/shapes_tiny_denseclip_neighbours.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_denseclip_neighbours/model_final.safetensors "
            "work_dirs/shapes_tiny_denseclip_neighbours/model_fp16.safetensors && "
            "ovseg train configs/shapes/shapes_tiny_denseclip_neighbours2.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_denseclip_neighbours2/model_final.safetensors "
            "ovseg/model_zoo/weights/ovseg-ViT-Ti-8-shapes-denseclip.safetensors"
        ),
    },
    ("ovseg-sam-tiny", "shapes"): {
        "file": "ovseg-sam-tiny-shapes.safetensors",
        "sha256": "818724e00b28a1cd2d0ad9c98ea993e03bde677cc44bb5a501ccddc48f8d8d7b",
        "recipe": (
            "ovseg train configs/sam/shapes_tiny_sam.yaml && "
            "python tools/export_weights.py work_dirs/shapes_tiny_sam/model_final.safetensors "
            "work_dirs/shapes_tiny_sam/model_fp16.safetensors && "
            "ovseg train configs/sam/shapes_tiny_sam_stage2.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_sam_stage2/model_final.safetensors "
            "ovseg/model_zoo/weights/ovseg-sam-tiny-shapes.safetensors"
        ),
    },
    ("owl-ovseg-ViT-Ti-8", "shapes"): {
        "file": "ovseg-owl-ViT-Ti-8-shapes.safetensors",
        "sha256": "1c80a7a03600555cf0e5b6f8f2c422a1f7a570b3c442094694cd338a25b7749c",
        "recipe": (
            "OMP_NUM_THREADS=1 ovseg train configs/detection/shapes_tiny_owl.yaml && "
            "OMP_NUM_THREADS=1 ovseg train configs/detection/shapes_tiny_owl_stage2.yaml && "
            "python tools/export_weights.py "
            "work_dirs/shapes_tiny_owl_stage2/model_final.safetensors "
            "ovseg/model_zoo/weights/ovseg-owl-ViT-Ti-8-shapes.safetensors"
        ),
    },
}

#: Packaged model folders (Hugging Face layout: ``config.json``, ``model.safetensors``, tokenizer
#: files), addressed as ``embedded:<name>`` where a folder is expected; every file's sha256 is
#: checked on first use.
EMBEDDED_FOLDERS: dict[str, dict] = {
    "read-shapes-tiny": {
        "folder": "read-shapes-tiny",
        "sha256": {
            "config.json": "fc62b199fc532337cc373fe152e5421b9213c0ac72056a3203a4e12c4bc82989",
            "model.safetensors": "5e47403fc8dc9f7011ef2f1dc37d907762c293c1596c811159324b298223062c",
            "tokenizer.json": "6ca7edb26b303afbef8b37da9dba116b21ea79bde9b19fafa87cf6eb0cfd1358",
            "tokenizer_config.json": "83a4422e1b411a29ecf5faeb68f4d34daf59344c6ea1f0578ab985fcaac1db95",
        },
        "recipe": (
            "ovseg train configs/read/shapes_tiny_read_caption.yaml && "
            "ovseg train configs/read/shapes_tiny_read.yaml && "
            "ovseg train configs/read/shapes_tiny_read_sasp.yaml && "
            "ovseg train configs/read/shapes_tiny_read_sasp_more.yaml && "
            "python tools/export_read_folder.py work_dirs/shapes_tiny_read_sasp_more/read_model "
            "ovseg/model_zoo/weights/read-shapes-tiny"
        ),
    },
}
EMBEDDED_PREFIX = "embedded:"

_VERIFIED: set[Path] = set()


def embedded_checkpoint(model_name: str, tag: str | None) -> Path | None:
    """The verified local file of a packaged ``(model_name, tag)``, or None if not packaged."""
    entry = EMBEDDED_WEIGHTS.get((model_name, tag or ""))
    if entry is None:
        return None
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise WeightsNotFoundError(
            f"The packaged weights {path.name} for {model_name} / {tag} are missing from this "
            f"installation; reinstall ovseg or rebuild them with: {entry['recipe']}"
        )
    if path not in _VERIFIED:
        from ovseg.weights import verify_sha256  # torch: only when the weights are used

        verify_sha256(path, entry["sha256"])
        _VERIFIED.add(path)
    return path


def embedded_folder(name: str) -> Path:
    """The verified packaged folder ``name`` (see :data:`EMBEDDED_FOLDERS`)."""
    entry = EMBEDDED_FOLDERS.get(name)
    if entry is None:
        raise WeightsNotFoundError(
            f"No packaged model folder {name!r}; packaged: {', '.join(EMBEDDED_FOLDERS)}."
        )
    folder = WEIGHTS_DIR / entry["folder"]
    missing = [f for f in entry["sha256"] if not (folder / f).is_file()]
    if missing or not entry["sha256"]:
        raise WeightsNotFoundError(
            f"The packaged model folder {name} is incomplete in this installation "
            f"(missing: {', '.join(missing) or 'all files'}); reinstall ovseg or rebuild it "
            f"with: {entry['recipe']}"
        )
    if folder not in _VERIFIED:
        from ovseg.weights import verify_sha256  # torch: only when the weights are used

        for file, digest in entry["sha256"].items():
            verify_sha256(folder / file, digest)
        _VERIFIED.add(folder)
    return folder


def packaged_tokenizer(name: str) -> Path:
    """The folder of a packaged Hugging Face tokenizer (e.g. ``"shapes-bpe"``, the synthetic
    world's LLaMA-style BPE tokenizer with ``[SEG]``)."""
    if name not in PACKAGED_TOKENIZERS:
        raise WeightsNotFoundError(
            f"No packaged tokenizer {name!r}; packaged: {', '.join(PACKAGED_TOKENIZERS)}."
        )
    path = TOKENIZERS_DIR / name
    if not (path / "tokenizer.json").is_file():
        raise WeightsNotFoundError(
            f"The packaged tokenizer {name} is missing from this installation; reinstall ovseg "
            f"or rebuild it with: {PACKAGED_TOKENIZERS[name]}"
        )
    return path


def export_weights(source: str | Path, destination: str | Path, *, fp16: bool = True) -> str:
    """Copy a trained state dict to a shippable safetensors file (optionally fp16); returns sha256.

    Floating-point tensors are cast to fp16 (they are cast back to the model's dtype on load);
    integer tensors are kept. The file is written atomically, and the same weights always give
    the same bytes.
    """
    from ovseg.weights import load_state_dict, save_state_dict, sha256_file

    state = load_state_dict(source)
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    # a single metadata entry: safetensors writes several in arbitrary order, which would make
    # the bytes, and so the sha256 in the table, differ between exports of the same weights
    save_state_dict(state, destination, metadata={"format": "pt"})
    return sha256_file(destination)
