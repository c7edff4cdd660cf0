"""Typed errors a user can cause. Each message says what to do next."""

from __future__ import annotations


class OVSegError(Exception):
    """Base class of every error ovseg raises on purpose."""


class ConfigError(OVSegError, ValueError):
    """A config file, preset or override is malformed or names something unknown."""


class UnknownComponentError(OVSegError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImageReadError(OVSegError, ValueError):
    """An image could not be decoded (missing, truncated, garbage or unsupported)."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the configured cap."""


class CheckpointError(OVSegError, RuntimeError):
    """A checkpoint is damaged, of the wrong format or does not fit the architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint references globals outside the safe allow-list."""


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """Weights are needed but absent locally and cannot be downloaded."""


class VocabularyError(OVSegError, ValueError):
    """A vocabulary is empty, has duplicates or cannot be parsed."""


class DatasetError(OVSegError, ValueError):
    """A dataset folder does not have the expected layout."""


class EvaluationError(OVSegError, ValueError):
    """Predictions cannot be scored against the ground truth (unknown image or category ids)."""


class InsecureLaunchError(ConfigError):
    """A server would be reachable from other machines without a login (add --auth/--auth-file)."""


class MissingDependencyError(OVSegError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip extra."""


class DatabaseError(OVSegError, ValueError):
    """A text database (vocabulary-free search) is missing, damaged or was built differently."""


class DatabaseMismatchError(DatabaseError):
    """A text database was built with another CLIP model than the pipeline that loads it."""


class PromptError(OVSegError, ValueError):
    """Prompts for a mask decoder are malformed, or no image was set before predicting."""


class UnmappableConfigError(ConfigError):
    """A foreign (mmengine / mmseg) config holds a setting ovseg has no equivalent for."""


class VideoReadError(OVSegError, ValueError):
    """A video or frame folder could not be read (missing, damaged, unsupported or empty)."""


class VideoTooLargeError(VideoReadError):
    """A video has larger frames, or more frames to process, than the configured budget."""
