"""Training engine: config-driven loop, torchrun/DDP, atomic checkpoints, exact resume."""

from ovseg.engine.launch import main_train, parse_train_args
from ovseg.engine.task import Task
from ovseg.engine.trainer import train

__all__ = ["Task", "main_train", "parse_train_args", "train"]
