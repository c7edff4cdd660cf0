"""LoRA on READ's language model, as READ / LISA train it (peft, imported lazily).

READ's defaults: rank 8, alpha 16, dropout 0.05, on the decoder's ``q_proj`` and ``v_proj``
linears only (never the vision tower, the projector, SAM or ``text_hidden_fcs``, which READ
trains or freezes as whole modules). Adapters are injected in place, so the model keeps its
class and methods; their parameters are named ``...q_proj.lora_A.default.weight`` etc.
:func:`merge_lora` folds them into the base weights (READ's release script merges before
saving), leaving plain ``nn.Linear`` layers with the original key names.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["READ_LORA_TARGETS", "add_lora", "merge_lora"]

READ_LORA_TARGETS = ("q_proj", "v_proj")


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = READ_LORA_TARGETS,
) -> list[str]:
    """Inject LoRA adapters into ``model.mllm.language_model``; returns the adapted module names.

    Only the adapters are made trainable inside the language model (its base weights are frozen).
    """
    from peft import LoraConfig, inject_adapter_in_model

    language_model = model.mllm.language_model
    names = sorted(
        name
        for name, module in language_model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in set(target_modules)
    )
    config = LoraConfig(
        r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout), target_modules=names
    )
    language_model.requires_grad_(False)
    inject_adapter_in_model(config, language_model)
    for name, param in language_model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter of ``model.mllm.language_model`` into its base linear and put the
    plain linear back in its place; returns how many layers were merged."""
    language_model = model.mllm.language_model
    merged = 0
    for name, module in list(language_model.named_modules()):
        base = getattr(module, "base_layer", None)
        if not isinstance(base, nn.Linear) or not hasattr(module, "merge"):
            continue
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = language_model.get_submodule(parent_name) if parent_name else language_model
        setattr(parent, child, base)
        merged += 1
    return merged
