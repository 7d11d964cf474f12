"""Colour-centroid track length: how long objects keep their colour in *generated* videos.

Needs no ground truth. Every object in a synthetic video (`vidm data synth`) is one flat colour
from `vidm.data.synth.PALETTE`, unique in its video, so an object that a model keeps
consistent from frame to frame can be followed by its colour alone. For one video, uint8
(T, H, W, 3):

1. frame 0: each palette colour whose largest 8-connected blob of matching pixels (RGB
   distance < `tol`) has >= `min_pixels` pixels is an object, at that blob's centroid
   (`vidm.eval.positions.detect_centroids`);
2. frames t = 1, 2, ...: the object is still tracked when some blob of its colour with
   >= `min_pixels` pixels has its centroid within `max_jump` px of the object's centroid in
   frame t-1; the nearest such blob gives the new centroid (nearest, not largest, so a
   stray patch of the same colour elsewhere does not break a good track). Here pieces of
   the colour within ~`join_radius` px of each other form one blob: an object cut in two by
   a thin nearer one, or a sprite whose cells touch only across a gap, is still one object
   (with plain components those splits lost visible objects in real videos);
3. track length = the number of consecutive frames from frame 0 in which it is tracked (1..T).
   Once lost it stays lost: a colour that comes back later is not a consistent object.

Per video: objects found in frame 0, mean track length in frames and as a fraction of T, and
the share of objects tracked through all T frames. Coordinates are the JSON's (pixel (r, c)
has centre (c + 0.5, r + 0.5)).

Defaults: `tol` 80 as in `positions` (palette colours are > 160 apart, so no pixel matches two);
`min_pixels` 10, below the smallest whole object at 64 px (a triangle, ~26 px) but above the
specks of saturated noise a generator can leave; `join_radius` 2 px (bridges gaps of ~4 px);
`max_jump` 0.25 x the frame's longer side, because the generator's fastest objects move up to
~0.21 side per frame (measured over 150 videos at 64 px): a lower limit would cut real tracks
at fast motion.

Real synthetic videos do not reach T for every object either: objects leave the frame or hide
behind nearer ones. Read generated figures next to the same metric on real clips of equal T.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidm.errors import ConfigError, NoVideosError, ShapeError, VideoError

MAX_JUMP_FRACTION = 0.25  # of the longer frame side: above the generator's fastest per-frame step


def palette_colours() -> tuple[list[str], np.ndarray]:
    """The synthetic generator's palette: (names, uint8 (P, 3) RGB)."""
    from vidm.data.synth import PALETTE

    return list(PALETTE), np.array(list(PALETTE.values()), np.uint8)


@dataclass
class Tracks:
    """Result of `track_lengths` for one video; K = objects found in frame 0."""

    colours: np.ndarray  # (K, 3) RGB of each object
    names: list[str]  # (K,) palette names ("" for colours given without names)
    lengths: np.ndarray  # (K,) int64 in [1, T]: consecutive frames tracked from frame 0
    centroids: np.ndarray  # (T, K, 2) float64 (x, y) px while tracked, NaN from the frame it is lost
    num_frames: int  # T

    @property
    def objects(self) -> int:
        return len(self.lengths)

    @property
    def mean_frames(self) -> float:
        """Mean track length in frames; NaN when no object was found."""
        return float(self.lengths.mean()) if self.objects else math.nan

    @property
    def mean_fraction(self) -> float:
        """Mean track length as a fraction of T; NaN when no object was found."""
        return self.mean_frames / self.num_frames if self.objects else math.nan

    @property
    def full_share(self) -> float:
        """Share of objects tracked through all T frames; NaN when no object was found."""
        return float((self.lengths == self.num_frames).mean()) if self.objects else math.nan

    def summary(self) -> dict:
        return {"frames": self.num_frames, "objects": self.objects, "mean_track_frames": self.mean_frames,
                "mean_track_fraction": self.mean_fraction, "full_track_share": self.full_share}


def _check_video(video) -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ShapeError(f"colour tracks: expected a uint8 video (T, H, W, 3), got {video.dtype} {video.shape}")
    if min(video.shape[:3]) == 0:
        raise ShapeError(f"colour tracks: empty video {video.shape}")
    return video


def _positive(name: str, value) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ConfigError(f"colour tracks: {name} must be a number > 0, got {value!r}")


def _check_settings(tol: float, min_pixels: int, max_jump, join_radius) -> None:
    _positive("tol", tol)
    if not isinstance(min_pixels, (int, np.integer)) or isinstance(min_pixels, bool) or min_pixels < 1:
        raise ConfigError(f"colour tracks: min_pixels must be an integer >= 1, got {min_pixels!r}")
    if max_jump is not None:
        _positive("max_jump (px)", max_jump)
    if not isinstance(join_radius, (int, np.integer)) or isinstance(join_radius, bool) or join_radius < 0:
        raise ConfigError(f"colour tracks: join_radius must be an integer >= 0, got {join_radius!r}")


def _blobs(mask: np.ndarray, min_pixels: int, join_radius: int, cv2) -> np.ndarray:
    """Centroids (n, 2) (x, y) of the blobs of a bool (H, W) mask with >= min_pixels pixels.

    A blob is the matching pixels of one 8-connected component of the mask dilated by
    `join_radius` px: pieces split by a thin occluder or a sprite's separate cells stay one
    object. Only the mask's own pixels count, for the size and the centroid."""
    if mask.sum() < min_pixels:
        return np.zeros((0, 2))
    m8 = mask.astype(np.uint8)
    if join_radius > 0:
        d = 2 * join_radius + 1
        m8 = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
    n, labels = cv2.connectedComponents(m8, connectivity=8)
    lab = labels[mask]  # (M,) label of each matching pixel
    rows, cols = np.nonzero(mask)
    count = np.bincount(lab, minlength=n).astype(np.float64)
    keep = np.flatnonzero(count >= min_pixels)
    keep = keep[keep > 0]  # label 0 is the background (never a matching pixel's, kept safe)
    x = np.bincount(lab, weights=cols, minlength=n)[keep] / count[keep]
    y = np.bincount(lab, weights=rows, minlength=n)[keep] / count[keep]
    return np.stack([x, y], 1) + 0.5  # pixel centres


def track_lengths(video, colours=None, tol: float = 80.0, min_pixels: int = 10,
                  max_jump: float | None = None, join_radius: int = 2) -> Tracks:
    """Follow each object of frame 0 by its colour (module docstring) -> `Tracks`.

    video: uint8 (T, H, W, 3). colours: candidate object colours (P, 3) RGB, default the
    synthetic palette. max_jump: px per frame, default 0.25 x max(H, W). join_radius: px;
    pieces of a colour this close count as one blob in frames 1.. (0: plain components).
    """
    from vidm.eval.flow import require_cv2
    from vidm.eval.positions import detect_centroids

    video = _check_video(video)
    _check_settings(tol, min_pixels, max_jump, join_radius)
    if colours is None:
        names, colours = palette_colours()
    else:
        colours = np.asarray(colours)
        if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
            raise ConfigError(f"colour tracks: colours must be (P, 3) RGB with P >= 1, got shape {colours.shape}")
        names = [""] * len(colours)
    cv2 = require_cv2()
    T, H, W = video.shape[:3]
    if max_jump is None:
        max_jump = MAX_JUMP_FRACTION * max(H, W)

    start = detect_centroids(video[:1], colours, tol, min_pixels)[0]  # (P, 2), NaN: colour absent
    found = np.flatnonzero(~np.isnan(start[:, 0]))
    K = len(found)
    cents = np.full((T, K, 2), np.nan)
    cents[0] = start[found]
    lengths = np.ones(K, np.int64)
    f32 = video.astype(np.float32)
    for j, k in enumerate(found):
        col = colours[k].astype(np.float32)
        for t in range(1, T):
            mask = ((f32[t] - col) ** 2).sum(-1) < tol * tol
            blobs = _blobs(mask, min_pixels, join_radius, cv2)
            if not len(blobs):
                break
            d = np.linalg.norm(blobs - cents[t - 1, j], axis=1)
            i = int(np.argmin(d))
            if d[i] > max_jump:
                break
            cents[t, j] = blobs[i]
            lengths[j] = t + 1
    return Tracks(colours=colours[found].copy(), names=[names[k] for k in found], lengths=lengths,
                  centroids=cents, num_frames=T)


def summarise(videos, colours=None, tol: float = 80.0, min_pixels: int = 10,
              max_jump: float | None = None, join_radius: int = 2) -> dict:
    """Colour tracks of several videos: uint8 (N, T, H, W, 3) or a sequence of (T_i, H, W, 3).

    Returns a dict (NaN where undefined; `vidm.eval.report.dumps` writes null): `per_video`
    (`Tracks.summary()` each) and the totals, pooled over all objects of all videos (a video
    without objects adds none): videos, videos_without_objects, objects, objects_per_video,
    mean_track_frames, mean_track_fraction (each object's length over its own video's T),
    full_track_share, and the settings.
    """
    if isinstance(videos, np.ndarray) and videos.ndim == 4:
        raise ShapeError(f"summarise: expected several videos (N, T, H, W, 3), got one {videos.shape}; "
                         f"use track_lengths for one video")
    videos = list(videos)
    if not videos:
        raise NoVideosError("colour tracks: no videos to summarise")
    _check_settings(tol, min_pixels, max_jump, join_radius)
    tracks = [track_lengths(v, colours, tol, min_pixels, max_jump, join_radius) for v in videos]
    lengths = np.concatenate([t.lengths for t in tracks]).astype(np.float64)
    frames = np.concatenate([np.full(t.objects, t.num_frames) for t in tracks]).astype(np.float64)
    n = len(lengths)
    return {
        "videos": len(tracks),
        "videos_without_objects": sum(t.objects == 0 for t in tracks),
        "objects": n,
        "objects_per_video": n / len(tracks),
        "mean_track_frames": float(lengths.mean()) if n else math.nan,
        "mean_track_fraction": float((lengths / frames).mean()) if n else math.nan,
        "full_track_share": float((lengths == frames).mean()) if n else math.nan,
        "settings": {"tol": tol, "min_pixels": min_pixels, "join_radius": join_radius,
                     "max_jump": max_jump if max_jump is not None else f"{MAX_JUMP_FRACTION} x frame side"},
        "per_video": [t.summary() for t in tracks],
    }


def is_synthetic(video_path: str | os.PathLike) -> bool:
    """Whether `video_path` has a `vidm data synth` ground-truth JSON (format vidm-synth-1) next to it."""
    from vidm.eval.positions import load_synth_meta

    path = Path(video_path).with_suffix(".json")
    if not path.is_file():
        return False
    try:
        load_synth_meta(path)
    except VideoError:
        return False  # some other JSON
    return True


def markdown(sets: dict[str, dict]) -> str:
    """A report.md section: one row per set name -> `summarise` result."""
    from vidm.eval.report import fmt, markdown_table

    rows = [[name, str(s["videos"]), fmt(s["objects_per_video"], 2), fmt(s["mean_track_frames"], 2),
             fmt(s["mean_track_fraction"], 3), fmt(s["full_track_share"], 3)] for name, s in sets.items()]
    header = ["set", "videos", "objects / video", "track length (frames)", "track / T", "tracked all T"]
    return "\n".join([
        "## Colour tracks (synthetic data; higher is better)", "",
        "Objects found in frame 0 by their palette colour and followed frame by frame while a blob of "
        "that colour stays near (`vidm/eval/colour_tracks.py`); means pooled over all objects. Real "
        "clips lose objects too (they leave the frame or hide): compare with the `real` row.", "",
        markdown_table(header, rows), ""])
