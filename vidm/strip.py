"""Side-by-side comparison strips: rows of frames (inputs, results, ground truth, baselines)
laid out in one PNG for a quick look."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

_PAD = 2
_LABEL_W = 88


def make_strip(rows: Sequence[np.ndarray], labels: Sequence[str] | None = None,
               scale: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Stack rows of frames into one image.

    rows: each a uint8 array (T_i, H, W, 3); all frames of all rows share H and W. Rows with
    fewer frames are padded with grey. labels: one text per row, drawn in a left margin.
    scale: integer nearest-neighbour upscaling (small 64x64 frames are hard to see).
    max_frames: keep at most this many frames per row, evenly spaced, first and last included.
    Returns uint8 (H_total, W_total, 3).
    """
    if not rows:
        raise ValueError("make_strip: no rows")
    h, w = rows[0].shape[1:3]
    for r in rows:
        if r.ndim != 4 or r.shape[1:] != (h, w, 3) or r.dtype != np.uint8:
            raise ValueError(f"make_strip: every row must be uint8 (T, {h}, {w}, 3), got {r.dtype} {r.shape}")
    if max_frames is not None:
        rows = [_subsample(r, max_frames) for r in rows]
    t_max = max(len(r) for r in rows)
    sh, sw = h * scale, w * scale
    left = _LABEL_W if labels else 0
    canvas = np.full((len(rows) * (sh + _PAD) + _PAD, left + t_max * (sw + _PAD) + _PAD, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        y = _PAD + i * (sh + _PAD)
        for j in range(t_max):
            x = left + _PAD + j * (sw + _PAD)
            tile = r[j].repeat(scale, 0).repeat(scale, 1) if j < len(r) else np.full((sh, sw, 3), 160, np.uint8)
            canvas[y:y + sh, x:x + sw] = tile
    if labels:
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        for i, text in enumerate(labels):
            draw.text((4, _PAD + i * (sh + _PAD) + sh // 2 - 5), str(text)[:14], fill=(0, 0, 0))
        canvas = np.asarray(img)
    return canvas


def save_strip(path, rows: Sequence[np.ndarray], labels: Sequence[str] | None = None, **kw) -> None:
    """`make_strip` and write the PNG atomically."""
    import os
    import tempfile

    img = Image.fromarray(make_strip(rows, labels, **kw))
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    from vidm.outputs import usual_modes

    fd, tmp = tempfile.mkstemp(prefix=".strip-", suffix=".png", dir=d)
    os.close(fd)
    usual_modes(tmp)  # mkstemp makes 0600; an output file gets the usual mode
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _subsample(frames: np.ndarray, n: int) -> np.ndarray:
    if len(frames) <= n:
        return frames
    idx = np.round(np.linspace(0, len(frames) - 1, n)).astype(int)
    return frames[idx]
