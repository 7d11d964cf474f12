"""Typed errors. The CLI prints any `VidmError` as one line and exits non-zero."""


class VidmError(Exception):
    """Base class for every error vidm raises on bad input."""


class VideoError(VidmError):
    """A file that is missing, not a video, or unreadable (corrupt, truncated)."""


class NoVideosError(VidmError):
    """A folder that holds no usable video."""


class NotEnoughFramesError(VidmError):
    """A request for more frames than a video has."""


class ConfigError(VidmError):
    """An unknown config key, a wrong type, or an unknown preset."""


class ShapeError(VidmError):
    """A tensor whose shape breaks a model's or kernel's constraint."""


class CheckpointError(VidmError):
    """A model or training folder that is missing, incomplete, or from another config."""


class DependencyError(VidmError):
    """An optional package (an extra such as `eval`) that a feature needs is not installed."""


class TrainingError(VidmError):
    """A training run that cannot go on (a non-finite loss or gradient)."""


class OutputError(VidmError):
    """An output path that exists, is an input, or cannot be written (see `vidm.outputs`)."""
