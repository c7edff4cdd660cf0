"""Interoperation with other toolkits: mmengine/mmseg configs and models, detectron2 formats.

Nothing here imports mmengine, mmseg, mmcv or detectron2 at package import; each module imports
its optional library inside the functions that need it.
"""
