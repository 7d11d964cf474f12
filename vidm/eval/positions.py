"""Object-position error on synthetic videos (`vidm data synth`, format "vidm-synth-1").

Every synthetic object has a unique flat colour, so its position in a generated frame can be
read off by colour: the centroid of the pixels within `tol` (RGB distance) of the object's
colour, restricted to the largest connected blob so that two half-strength ghosts (what
cross-fade and failed optical flow leave) do not average to a deceptively right midpoint.
Coordinates follow the JSON: pixels, origin at the top-left corner, pixel (r, c) has centre
(c + 0.5, r + 0.5); x, y is the centroid of the shape's area.

Scoring rules:
- an object is scored in a frame only when at least `min_visible` of its area shows there
  (JSON `visible_fraction`: after occlusion by nearer objects and the frame edge); a partly
  hidden object's visible pixels have a different centroid from its whole area, and an object
  that is hidden or outside the frame has no position to find;
- a scored object that is not found (fewer than `min_pixels` matching pixels) scores
  `miss_penalty` pixels; the default is the mean distance between two random points in the
  frame (0.5214 x side for a square), i.e. a miss counts as much as a uniformly random guess.
  The miss rate is reported next to the error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from vidm.errors import ConfigError, ShapeError, VideoError

SYNTH_FORMAT = "vidm-synth-1"


def load_synth_meta(path: str | os.PathLike) -> dict:
    """Read a synthetic video's ground-truth JSON (the file next to NNNNN.mp4)."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise VideoError(f"{path}: ground-truth JSON not found (made by `vidm data synth`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise VideoError(f"{path}: unreadable ground-truth JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SYNTH_FORMAT or "objects" not in meta:
        raise VideoError(f"{path}: not a vidm synthetic ground truth (format {SYNTH_FORMAT!r})")
    return meta


def detect_centroids(
    frames: np.ndarray, colours, tol: float = 80.0, min_pixels: int = 3, largest_component: bool = True
) -> np.ndarray:
    """Centroid of each colour in each frame -> float64 (T, K, 2) (x, y); NaN where not found.

    frames: uint8 (T, H, W, 3); colours: (K, 3) RGB. A pixel matches a colour when its RGB
    distance is below `tol`. With `largest_component` (needs OpenCV) only the largest
    8-connected blob of matching pixels counts.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ShapeError(f"detect_centroids frames: expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    colours = np.asarray(colours, np.float32).reshape(-1, 3)
    if largest_component:
        from vidm.eval.flow import require_cv2

        cv2 = require_cv2()
    T, K = frames.shape[0], colours.shape[0]
    out = np.full((T, K, 2), np.nan)
    f32 = frames.astype(np.float32)
    for k in range(K):
        masks = ((f32 - colours[k]) ** 2).sum(-1) < tol * tol  # (T, H, W)
        for t in range(T):
            mask = masks[t]
            if mask.sum() < min_pixels:
                continue
            if largest_component:
                n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # label 0 is the background
                mask = labels == biggest
                if mask.sum() < min_pixels:
                    continue
            rows, cols = np.nonzero(mask)
            out[t, k] = cols.mean() + 0.5, rows.mean() + 0.5
    return out


@dataclass
class PositionError:
    """Result of `object_position_error`. Arrays are (T, K): frame x object."""

    per_frame: np.ndarray  # (T,) mean error in px over the objects scored in that frame (NaN: none scored)
    errors: np.ndarray  # (T, K) px; NaN where not scored
    scored: np.ndarray  # (T, K) bool: visible enough to be scored
    detected: np.ndarray  # (T, K) bool: found by colour (only meaningful where scored)
    centroids: np.ndarray  # (T, K, 2) detected (x, y), NaN where not found

    @property
    def mean(self) -> float:
        """Mean error over all scored (frame, object) pairs; NaN when nothing was scored."""
        e = self.errors[self.scored]
        return float(e.mean()) if e.size else math.nan

    @property
    def miss_rate(self) -> float:
        """Share of scored (frame, object) pairs whose object was not found."""
        n = int(self.scored.sum())
        return float((self.scored & ~self.detected).sum() / n) if n else math.nan


def object_position_error(
    frames: np.ndarray,
    meta: dict,
    frame_indices=None,
    tol: float = 80.0,
    min_pixels: int = 3,
    min_visible: float = 0.9,
    miss_penalty: float | None = None,
    largest_component: bool = True,
) -> PositionError:
    """Object-position error of `frames` against a synthetic video's ground truth.

    frames: uint8 (T, H, W, 3), generated frames at the ground-truth video's resolution.
    meta: the ground-truth JSON (`load_synth_meta`). frame_indices: (T,) the ground-truth frame
    index of each given frame (e.g. the in-between frames of a cut clip); default 0..T-1.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ShapeError(f"object_position_error frames: expected uint8 (T, H, W, 3), got {frames.shape}")
    T, H, W = frames.shape[:3]
    if (H, W) != (meta.get("height", H), meta.get("width", W)):
        raise ShapeError(
            f"object_position_error: frames are {H}x{W} but the ground truth is {meta['height']}x{meta['width']}"
        )
    idx = np.arange(T) if frame_indices is None else np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    n_gt = int(meta.get("num_frames", len(meta["objects"][0]["x"]) if meta["objects"] else 0))
    if idx.shape[0] != T or (T and (idx.min() < 0 or idx.max() >= n_gt)):
        raise ConfigError(f"object_position_error frame_indices: need {T} indices in [0, {n_gt}), got {idx.tolist()}")
    objects = meta["objects"]
    K = len(objects)
    if K:
        gt = np.stack([np.stack([np.asarray(o["x"], float), np.asarray(o["y"], float)], -1)[idx] for o in objects], 1)
        # visible_fraction: share of the area that shows; older files have the bool `visible` only.
        vis = [o["visible_fraction"] if "visible_fraction" in o else o["visible"] for o in objects]
        vis = np.stack([np.asarray(v, float)[idx] for v in vis], 1)
    else:
        gt, vis = np.zeros((T, 0, 2)), np.zeros((T, 0))  # (T, K, 2), (T, K)
    scored = vis >= min_visible

    found = detect_centroids(frames, [o["colour"] for o in objects], tol, min_pixels, largest_component)
    detected = ~np.isnan(found[..., 0])
    if miss_penalty is None:
        miss_penalty = 0.5214 * math.sqrt(H * W)  # mean distance of two random points in a square
    dist = np.linalg.norm(found - gt, axis=-1)  # (T, K), NaN where not found
    errors = np.where(scored, np.where(detected, dist, miss_penalty), np.nan)
    with np.errstate(invalid="ignore"):
        counts = scored.sum(1)
        per_frame = np.where(counts > 0, np.nansum(errors, 1) / np.maximum(counts, 1), np.nan)
    return PositionError(per_frame=per_frame, errors=errors, scored=scored, detected=detected, centroids=found)
