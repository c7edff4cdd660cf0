"""Prompt templates for class names: CLIP's 80 ImageNet templates and simple alternatives."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from ovseg.errors import ConfigError

TemplateSet = tuple[Callable[[str], str], ...]


def _from_strings(templates: Sequence[str]) -> TemplateSet:
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad:
        raise ConfigError(f"Templates must contain '{{}}' where the class name goes: {bad[:3]}.")
    return tuple((lambda name, t=t: t.replace("{c}", "{}").format(name)) for t in templates)


NAMED_TEMPLATES: dict[str, TemplateSet] = {
    "imagenet80": tuple(OPENAI_IMAGENET_TEMPLATES),
    "photo": _from_strings(["a photo of a {}."]),
    "none": _from_strings(["{}"]),
}


def resolve_templates(templates: str | Sequence[str]) -> TemplateSet:
    """Turn a template-set name (``imagenet80``, ``photo``, ``none``) or strings into callables."""
    if isinstance(templates, str):
        if templates not in NAMED_TEMPLATES:
            raise ConfigError(
                f"Unknown template set {templates!r}; use one of {', '.join(NAMED_TEMPLATES)} "
                "or a list of strings containing '{}'."
            )
        return NAMED_TEMPLATES[templates]
    if not templates:
        raise ConfigError("The template list is empty; give at least one template such as '{}'.")
    return _from_strings(list(templates))
