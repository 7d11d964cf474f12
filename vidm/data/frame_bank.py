"""Decoded frames of a folder of videos held in memory, and the reference-decoder's examples.

Training the reference decoder needs a target frame and references a few frames away, at
several resolutions, thousands of times a minute. Seeking into long-GOP real video costs
0.02-0.4 s per clip on one core, so `FrameBank` decodes every video once (short side capped,
area filter) and keeps uint8 frames; `ReferenceExamples` draws examples from it.

Examples never span a shot cut (`shot_bounds`): a target whose references lie in another shot
has nothing in them to build it from, and a few such examples (the footage's iscc_demo.mp4 has
26 cuts) carry a large share of the loss.

What counts as a video is decided by probing (FFmpeg opens it and yields a frame), not by its
extension, and every frame that decodes is used, whatever the container header claims.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidm.errors import ConfigError, NoVideosError, VideoError
from vidm.video import is_video_candidate, iter_decoded

def candidate_files(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` that might be a video by its name (`vidm.video.is_video_candidate`),
    sorted; whether it is one is decided by decoding it."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise NoVideosError(f"{root}: no such folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in filenames if is_video_candidate(Path(dirpath, f))]
    return sorted(out)


def decode_all(path: Path, max_short_side: int | None) -> np.ndarray:
    """Every frame that decodes -> uint8 (T, H, W, 3), downscaled (area filter) so the short side
    is at most `max_short_side`. Raises VideoError when none does."""
    frames, size = [], None
    for frame in iter_decoded(path):
        if size is None:
            w, h = frame.width, frame.height
            s = 1.0 if not max_short_side or min(w, h) <= max_short_side else max_short_side / min(w, h)
            size = (max(1, round(w * s)), max(1, round(h * s)))
        frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA"))
    if not frames:
        raise VideoError(f"{path}: no frame decodes")
    return np.stack(frames)


CUT_LEVELS = 20.0  # a cut: consecutive frames differ by more than this (mean |diff|, 0..255) ...
CUT_RATIO = 6.0  # ... and by more than this many times the video's median difference


def shot_bounds(video: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> int64 (K + 1,) boundaries of its K shots: shot k is frames
    b[k] .. b[k+1] - 1. A cut is a jump in the mean absolute difference of consecutive frames
    (measured on a thumbnail of at most 64 px: cheap, and blind to noise)."""
    T = len(video)
    if T < 2:
        return np.array([0, T], dtype=np.int64)
    step = max(1, min(video.shape[1:3]) // 64)
    thumb = video[:, ::step, ::step].astype(np.int16)
    d = np.abs(np.diff(thumb, axis=0)).mean(axis=(1, 2, 3))  # (T - 1,): frame t vs t + 1
    cuts = np.nonzero(d > max(CUT_LEVELS, CUT_RATIO * float(np.median(d))))[0] + 1
    return np.concatenate([[0], cuts, [T]]).astype(np.int64)


class FrameBank:
    """All decodable videos under `root` (or the given files), each as uint8 (T, H, W, 3).

    `.names` are paths relative to the root; `.skipped` lists (path, reason) of files that did
    not decode; videos with fewer than `min_frames` frames are skipped too. `.shots[i]` are
    video i's shot boundaries (`shot_bounds`)."""

    def __init__(self, root: str | os.PathLike, max_short_side: int | None = 256, min_frames: int = 2,
                 progress: bool = False):
        from tqdm import tqdm

        self.root = Path(root)
        self.videos: list[np.ndarray] = []
        self.names: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.shots: list[np.ndarray] = []
        files = candidate_files(self.root)
        for p in tqdm(files, desc="decoding videos", unit="video", disable=not progress, leave=False):
            try:
                arr = decode_all(p, max_short_side)
            except VideoError as e:
                self.skipped.append((str(p), str(e).removeprefix(f"{p}: ")))
                continue
            if len(arr) < min_frames:
                self.skipped.append((str(p), f"only {len(arr)} frame(s)"))
                continue
            self.videos.append(arr)
            self.shots.append(shot_bounds(arr))
            self.names.append(p.relative_to(self.root).as_posix() if p != self.root else p.name)
        if not self.videos:
            raise NoVideosError(f"{self.root}: no decodable video with >= {min_frames} frames "
                                f"({len(self.skipped)} file(s) skipped)")

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_frames(self) -> int:
        return sum(len(v) for v in self.videos)


@dataclass
class ExampleConfig:
    """How `ReferenceExamples` draws (target, references) examples. Offsets are in frames."""

    scales: tuple[int, ...] = (1, 2, 4)  # output at S * scale; the references at the same size
    scale_probs: tuple[float, ...] = (0.5, 0.3, 0.2)
    p_two: float = 0.6  # references on both sides (interpolation)
    p_one: float = 0.25  # references before the target only (prediction / generation)
    p_none: float = 0.15  # no reference: the plain decoder
    max_gap: int = 16  # two-sided: frames between the references, 2..max_gap (log-uniform)
    max_back: int = 3  # one-sided: the nearer reference 1..max_back frames back
    p_anchor: float = 0.5  # one-sided: a second, far reference (the first frame of the video)
    flip: bool = True

    def validate(self, where: str = "ExampleConfig") -> None:
        if not self.scales or any(s < 1 for s in self.scales) or len(self.scales) != len(self.scale_probs):
            raise ConfigError(f"{where}: scales must be ints >= 1, one probability each")
        probs = (self.p_two, self.p_one, self.p_none)
        if any(p < 0 for p in probs) or not abs(sum(probs) - 1) < 1e-6:
            raise ConfigError(f"{where}: p_two + p_one + p_none must be 1 (each >= 0), got {probs}")
        if self.max_gap < 2 or self.max_back < 1:
            raise ConfigError(f"{where}: max_gap must be >= 2 and max_back >= 1")


class ReferenceExamples(torch.utils.data.Dataset):
    """Keys (video index, item seed) -> one example, a pure function of the key:

    frames   float32 (3, 3, Pmax, Pmax) in [-1, 1]: target, reference slot 0, slot 1 (zeros if
             absent); the example fills the top-left P x P, P = size * scale (Pmax = size *
             max(scales)), so a batch stacks while each example keeps its own pixels
    scale    int, offsets float32 (2,) (reference time minus target time), present float32 (2,)
    """

    def __init__(self, bank: FrameBank, size: int, cfg: ExampleConfig):
        cfg.validate()
        if size < 8:
            raise ConfigError(f"ReferenceExamples: size (the model grid) must be >= 8, got {size}")
        self.bank, self.cfg, self.size = bank, cfg, int(size)
        self.out = self.size * max(cfg.scales)

    def __len__(self) -> int:
        return len(self.bank)

    def _shot(self, rng: np.random.Generator, bounds: np.ndarray) -> tuple[int, int]:
        """(first frame, length) of a shot drawn in proportion to its length."""
        lengths = np.diff(bounds)
        k = int(rng.choice(len(lengths), p=lengths / lengths.sum()))
        return int(bounds[k]), int(lengths[k])

    def _times(self, rng: np.random.Generator, n: int) -> tuple[int, list[int]]:
        """(target index, [reference indices]) in a shot of n frames (the anchor: its first)."""
        c = self.cfg
        mode = rng.choice(3, p=[c.p_two, c.p_one, c.p_none])
        if mode == 0 and n >= 3:
            g = int(round(np.exp(rng.uniform(np.log(2), np.log(min(c.max_gap, n - 1) + 0.49)))))
            g = min(max(g, 2), n - 1)
            s = int(rng.integers(0, n - g))
            t = s + int(rng.integers(1, g))
            refs = [s, s + g] if rng.random() < 0.5 else [s + g, s]
            return t, refs
        if mode != 2 and n >= 2:  # a one-frame shot gets a plain-decoder example
            d = int(rng.integers(1, min(c.max_back, n - 1) + 1))
            t = int(rng.integers(d, n))
            refs = [t - d]
            if t - d > 0 and rng.random() < c.p_anchor:
                refs.append(0)
            return t, refs
        return int(rng.integers(0, n)), []

    def __getitem__(self, key) -> dict:
        index, seed = key
        rng = np.random.default_rng(int(seed))
        c = self.cfg
        video = self.bank.videos[int(index)]
        T, H, W, _ = video.shape
        first, n = self._shot(rng, self.bank.shots[int(index)])
        t, refs = self._times(rng, n)
        t, refs = first + t, [first + r for r in refs]
        scale = int(rng.choice(c.scales, p=np.asarray(c.scale_probs) / sum(c.scale_probs)))
        P = self.size * scale
        short = min(H, W)
        L = int(rng.integers(min(P, short), short + 1))  # crop side in stored pixels
        y0, x0 = int(rng.integers(0, H - L + 1)), int(rng.integers(0, W - L + 1))
        idx = [t] + refs
        crop = video[idx, y0:y0 + L, x0:x0 + L]
        if c.flip and rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2).float()
        if L != P:
            x = torch.nn.functional.interpolate(x, size=(P, P), mode="bilinear", align_corners=False,
                                                antialias=L > P)
        x = (x / 127.5 - 1).clamp(-1, 1)
        frames = torch.zeros(3, 3, self.out, self.out)
        frames[: len(idx), :, :P, :P] = x
        offsets = torch.zeros(2)
        present = torch.zeros(2)
        for k, r in enumerate(refs):
            offsets[k], present[k] = float(r - t), 1.0
        return {"frames": frames, "scale": scale, "offsets": offsets, "present": present}


__all__ = ["FrameBank", "ReferenceExamples", "ExampleConfig", "candidate_files", "decode_all", "shot_bounds"]
