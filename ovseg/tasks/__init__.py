"""Trainable tasks for ``ovseg.engine`` (registered in ``TASKS`` under their recipe names).

- ``ContrastiveCLIP`` (:mod:`ovseg.tasks.contrastive_clip`): CLIP's contrastive loss on captions.
- ``DenseCLIP`` (:mod:`ovseg.tasks.denseclip`): DenseCLIP's decode head and context decoder.
- ``OwlDetection`` (:mod:`ovseg.tasks.owl_detection`): OWL-ViT's heads and set loss on a CLIP.
- ``PromptedSAM`` (:mod:`ovseg.tasks.prompted_sam`): a whole SAM on prompted instances.
- ``READ`` (:mod:`ovseg.tasks.read`): READ's caption pre-training and reasoning fine-tuning.
"""
