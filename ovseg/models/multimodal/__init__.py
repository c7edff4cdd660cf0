"""Multimodal (LLaVA-style) models: READ's ``[SEG]``-token segmentation.

Modules: :mod:`.constants` (token ids), :mod:`.conversation` (LLaVA v1 prompts, labels),
:mod:`.vision` (vision towers), :mod:`.processing` (image inputs), :mod:`.llava` (the
multimodal language model), :mod:`.losses`, :mod:`.read` (READ: forward with losses, generate),
:mod:`.checkpoint` (released folders: load, build, save), :mod:`.release` (where a
released folder is on this machine), :mod:`.lora`. transformers / peft are imported inside
functions, so importing this package stays light.
"""
