"""Video data sets: `VideoFolder` (training clips), the folder index, the synthetic generator.

Names load lazily so `import vidm.data.synth` (used by the CLI and its worker processes)
does not pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VideoFolder": "vidm.data.dataset",
    "ClipParams": "vidm.data.dataset",
    "frames_to_tensor": "vidm.data.dataset",
    "build_index": "vidm.data.index",
    "find_videos": "vidm.data.index",
    "VideoEntry": "vidm.data.index",
    "SkippedFile": "vidm.data.index",
    "VideoIndex": "vidm.data.index",
    "INDEX_NAME": "vidm.data.index",
    "generate_dataset": "vidm.data.synth",
    "render_video": "vidm.data.synth",
    "colour_centroid": "vidm.data.synth",
    "PALETTE": "vidm.data.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidm.data' has no attribute {name!r}")
