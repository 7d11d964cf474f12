"""`VideoFolder`: random clips from a folder of videos, for training.

Each item is one random clip of `num_frames` frames from one video (so an epoch visits every
usable video once). Randomness (start frame, stride, flip, time reversal) comes from a
generator seeded by (seed, epoch, index) only, so the same seed gives the same clips in any
process, any DataLoader worker and any worker count. Call `set_epoch(e)` before each epoch to
draw new clips (with persistent workers, the workers keep the epoch they were started with).

Nothing holding an open file lives on the dataset: every item opens its video, reads the clip
and closes it, so the dataset pickles cleanly into DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidm.data.index import SkippedFile, VideoEntry, build_index
from vidm.errors import ConfigError, NotEnoughFramesError, NoVideosError, VideoError, warn
from vidm.video import Size, read_clip


@dataclass(frozen=True)
class ClipParams:
    video: int  # index into VideoFolder.videos
    start: int
    stride: int
    flip: bool
    reverse: bool


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in [-1, 1].

    Done in numpy on purpose: torch's elementwise ops would wake its OpenMP threads, whose
    spinning starves the video decoder when loading runs in the main process."""
    x = np.ascontiguousarray(rearrange(frames, "t h w c -> t c h w"), dtype=np.float32)
    x /= 127.5  # exact at both ends: 0 -> -1, 255 -> 1
    x -= 1.0
    return torch.from_numpy(x)


class VideoFolder(torch.utils.data.Dataset):
    """Random clips from every usable video under `root` (searched recursively).

    num_frames: T, frames per clip (1 for image / content-model training).
    stride: fixed frame stride, or (lo, hi) for a stride drawn uniformly from lo..hi
        (inclusive, capped per video so the clip fits).
    size: int (short side resized, square centre crop), (H, W), or None (native size).
    flip / reverse: horizontal flip / time reversal, each with probability 1/2.
    image_mode: how image files are read ("sequence": a folder of numbered images is one
        video; "single": each image is a one-frame video; "none": images ignored).
    cache_index: keep the probe results in `<root>/.vidm_index.json` (memory only when the
        root is read-only).

    Unreadable files and videos shorter than one clip are skipped with a warning and listed
    in `.skipped` (a list of SkippedFile(path, reason)). A file that fails later, while
    training, is skipped the same way and another video is read in its place (the list then
    grows in the process that met the failure, e.g. a DataLoader worker).
    """

    def __init__(self, root: str | os.PathLike, num_frames: int,
                 stride: int | tuple[int, int] = 1, size: Size = 64, flip: bool = False,
                 reverse: bool = False, seed: int = 0, image_mode: str = "sequence",
                 cache_index: bool = True, verify: bool = True, progress: bool = False):
        if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ConfigError(f"num_frames must be an int >= 1, got {num_frames!r}")
        lo, hi = (stride, stride) if isinstance(stride, (int, np.integer)) else tuple(stride)
        if not 1 <= lo <= hi:
            raise ConfigError(f"stride must be an int >= 1 or (lo, hi) with 1 <= lo <= hi, "
                              f"got {stride!r}")
        self.root = Path(root)
        self.num_frames = int(num_frames)
        self.stride_range = (int(lo), int(hi))
        self.size = size
        self.flip, self.reverse = bool(flip), bool(reverse)
        self.seed, self.epoch = int(seed), 0

        index = build_index(self.root, image_mode=image_mode, cache=cache_index,
                            verify=verify, progress=progress)
        self.skipped: list[SkippedFile] = list(index.skipped)
        need = self.min_span
        self.videos: list[VideoEntry] = []
        for v in index.videos:
            if v.num_frames >= need:
                self.videos.append(v)
            else:
                self.skipped.append(SkippedFile(
                    v.path, f"too short ({v.num_frames} frames, a clip needs {need})"))
        if self.skipped:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in self.skipped[:3])
            more = f" (and {len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
            warn(f"{self.root}: skipped {len(self.skipped)} file(s): {shown}{more}")
        if not self.videos:
            raise NoVideosError(f"{self.root}: no usable videos (found {len(index.videos)} "
                                f"readable, {len(index.skipped)} unreadable; clips need "
                                f"{need} frames)")
        self._bad: set[int] = set()

    # ------------------------------------------------------------------ index facts

    @property
    def min_span(self) -> int:
        """Frames a clip covers at the smallest stride."""
        return (self.num_frames - 1) * self.stride_range[0] + 1

    @property
    def frame_counts(self) -> list[int]:
        return [v.num_frames for v in self.videos]

    @property
    def paths(self) -> list[str]:
        return [v.path for v in self.videos]

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ sampling

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, index])

    def _draw(self, rng: np.random.Generator, video: int) -> ClipParams:
        T, n = self.num_frames, self.videos[video].num_frames
        lo, hi = self.stride_range
        hi = lo if T == 1 else min(hi, (n - 1) // (T - 1))  # largest stride that still fits
        stride = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, n - (T - 1) * stride))
        flip = bool(self.flip and rng.random() < 0.5)
        reverse = bool(self.reverse and T > 1 and rng.random() < 0.5)
        return ClipParams(video, start, 1 if T == 1 else stride, flip, reverse)

    def clip_params(self, index: int) -> ClipParams:
        """The clip item `index` reads in the current epoch (if its video stays readable)."""
        return self._draw(self._rng(index), index)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.videos):
            raise IndexError(index)
        rng = self._rng(index)
        video = index
        for _ in range(min(len(self.videos), 10)):
            if video not in self._bad:
                p = self._draw(rng, video)
                try:
                    frames = read_clip(self.videos[video].path, p.start, self.num_frames,
                                       p.stride, self.size)  # (T, H, W, 3) uint8
                    return self._item(frames, p)
                except (VideoError, NotEnoughFramesError) as e:
                    self._skip_at_runtime(video, e)
            video = int(rng.integers(len(self.videos)))
        raise NoVideosError(f"{self.root}: could not read a clip after several tries "
                            f"({len(self._bad)} videos failed)")

    def _skip_at_runtime(self, video: int, error: Exception) -> None:
        self._bad.add(video)
        path = self.videos[video].path
        reason = str(error).removeprefix(f"{path}: ")
        self.skipped.append(SkippedFile(path, reason))
        warn(f"{path}: skipped while training ({reason})")

    def _item(self, frames: np.ndarray, p: ClipParams) -> dict:
        if p.flip:
            frames = frames[:, :, ::-1]
        if p.reverse:
            frames = frames[::-1]
        return {"video": frames_to_tensor(frames),  # (T, 3, H, W) float32 in [-1, 1]
                "path": self.videos[p.video].path, "start": p.start, "stride": p.stride,
                "flip": p.flip, "reverse": p.reverse}
