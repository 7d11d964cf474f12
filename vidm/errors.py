"""Typed errors and warnings. The CLI prints any `VidmError` as one line and exits non-zero.

Errors about bad input (a wrong setting, value, shape or frame request) are also `ValueError`s,
so code that catches ValueError around a vidm call keeps working. Warnings vidm raises are
`VidmWarning`s (a UserWarning) and print as one line, `vidm: warning: ...`, without the source
line Python's default format adds (`warn`).
"""

import warnings


class VidmError(Exception):
    """Base class for every error vidm raises on bad input."""


class VideoError(VidmError):
    """A file that is missing, not a video, or unreadable (corrupt, truncated)."""


class NoVideosError(VidmError):
    """A folder that holds no usable video."""


class NotEnoughFramesError(VidmError, ValueError):
    """A request for more frames than a video has."""


class ConfigError(VidmError, ValueError):
    """An unknown config key, a wrong type or value, or an unknown preset."""


class ShapeError(VidmError, ValueError):
    """A tensor whose shape breaks a model's or kernel's constraint."""


class CheckpointError(VidmError):
    """A model or training folder that is missing, incomplete, or from another config."""


class DependencyError(VidmError):
    """An optional package (an extra such as `eval`) that a feature needs is not installed."""


class TrainingError(VidmError):
    """A training run that cannot go on (a non-finite loss or gradient)."""


class OutputError(VidmError):
    """An output path that exists, is an input, or cannot be written (see `vidm.outputs`)."""


class NumericalError(VidmError):
    """Sampling produced non-finite values (NaN or inf): nothing is written."""


class VidmWarning(UserWarning):
    """A warning from vidm; printed as one line (see `warn`)."""


def warn(message: str) -> None:
    """Warn with one clean line on stderr, `vidm: warning: MESSAGE` (no file name, line number
    or source line). Still a real warning: filters and `pytest.warns(UserWarning)` see it."""
    warnings.warn(VidmWarning(message), stacklevel=2)


_default_format = warnings.formatwarning


def _format(message, category, filename, lineno, line=None):
    if isinstance(category, type) and issubclass(category, VidmWarning):
        return f"vidm: warning: {' '.join(str(message).split())}\n"
    return _default_format(message, category, filename, lineno, line)


if getattr(warnings.formatwarning, "__module__", None) != __name__:
    warnings.formatwarning = _format
