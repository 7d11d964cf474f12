"""Latent cache: a video folder encoded once by the frame autoencoder, so diffusion training
never decodes video or runs the encoder.

Layout of a cache folder (written atomically: a temp folder renamed into place; an existing
folder is replaced only when it is vidm's own, see vidm.outputs):

    index.json               {"format": "vidm-latent-cache", "version": 1,
                              "autoencoder": <model folder>, "autoencoder_config": {...},
                              "autoencoder_fingerprint": <vidm.models.pretrained.latent_fingerprint>,
                              "latent_scale": s, "size": [H, W], "latent_shape": [C, h, w],
                              "dtype": "float32", "num_frames": total,
                              "shards": ["shard-00000.safetensors", ...],
                              "videos": [{"key": "v0000000", "path": <relative to data root>,
                                          "shard": i, "num_frames": T, "fps": f,
                                          "shots": [0, ..., T] shot boundaries}, ...],
                              "skipped": [{"path": ..., "reason": ...}]}
    shard-XXXXX.safetensors  one tensor per video: key -> (T, C, h, w) latents, already
                             multiplied by latent_scale (about unit std; the posterior mean)

Data sets over a cache (items keyed by (index, item_seed), see train/batches.py):
    LatentFrames  single latent frames (content model)     -> {"latent": (C, h, w)}
    LatentClips   random T-frame windows in one shot       -> {"latents": (T, C, h, w),
                  "times": (T,) frame positions with the window's first frame at 0,
                  "anchor": (C, h, w) the shot's first latent frame (VIDM content anchor)}
    PairedLatentClips  LatentClips plus "low": the same window from a cache of the same videos
                  at another size (the cascade upsampler's condition)
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Iterable

from vidm.errors import CheckpointError, ConfigError, NoVideosError, warn

CACHE_FORMAT = "vidm-latent-cache"
CACHE_VERSION = 1
INDEX_NAME = "index.json"


# ----------------------------------------------------------------------------- writing


def write_cache(out: str | os.PathLike, entries: Iterable[tuple[str, "object", dict]], meta: dict,
                shard_bytes: int = 256 << 20, dtype=None) -> Path:
    """Write a cache from `entries` = (relative path, latents (T, C, h, w), extra info) in
    order. `meta` goes into index.json (autoencoder, latent_scale, size, ...). Atomic."""
    import torch
    from safetensors.torch import save_file

    from vidm.serialization import atomic_write_dir

    def write(tmp: Path) -> None:
        shards: list[str] = []
        videos: list[dict] = []
        pending: dict[str, torch.Tensor] = {}
        size = 0
        latent_shape = None
        stored_dtype = "float32"
        total = 0

        def flush() -> None:
            nonlocal pending, size
            if pending:
                name = f"shard-{len(shards):05d}.safetensors"
                save_file(pending, str(tmp / name))
                shards.append(name)
                pending, size = {}, 0

        for rel, z, info in entries:
            z = z.detach().cpu()
            if dtype is not None:
                z = z.to(dtype)
            if z.ndim != 4:
                raise ConfigError(f"latent cache: {rel}: latents must be (T, C, h, w), got {tuple(z.shape)}")
            if latent_shape is None:
                latent_shape = list(z.shape[1:])
                stored_dtype = str(z.dtype).replace("torch.", "")
            elif list(z.shape[1:]) != latent_shape:
                raise ConfigError(f"latent cache: {rel}: latent shape {list(z.shape[1:])} differs from {latent_shape}")
            key = f"v{len(videos):07d}"
            pending[key] = z.contiguous()
            videos.append({"key": key, "path": rel, "shard": len(shards), "num_frames": int(z.shape[0]), **info})
            total += int(z.shape[0])
            size += z.numel() * z.element_size()
            if size >= shard_bytes:
                flush()
        flush()
        index = {
            "format": CACHE_FORMAT, "version": CACHE_VERSION, **meta,
            "latent_shape": latent_shape, "num_frames": total,
            "dtype": stored_dtype,
            "shards": shards, "videos": videos,
        }
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n")

    return atomic_write_dir(out, write)


def cache_latents(autoencoder: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                  size: int = 64, max_frames: int | None = None, chunk_size: int = 32,
                  dtype: str = "float32", device: str | None = None, shard_mb: int = 256,
                  progress: bool = True) -> dict:
    """Encode every usable video under `data` with the autoencoder at `autoencoder` into a cache
    at `out`. Unreadable videos are skipped with a warning and counted. Returns the index."""
    import torch
    from tqdm.auto import tqdm

    from vidm.data.dataset import frames_to_tensor
    from vidm.data.frame_bank import shot_bounds
    from vidm.data.index import build_index
    from vidm.errors import NotEnoughFramesError, VideoError
    from vidm.models.autoencoder import AutoencoderKL, encode_frames
    from vidm.video import read_clip

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ConfigError(f"--dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    from vidm.pipeline.pipeline import resolve_device

    dev = resolve_device(device)  # a one-line ConfigError for cuda on a CPU-only build
    ae = AutoencoderKL.from_pretrained(autoencoder).eval()
    ae.to(dev)
    index = build_index(data, progress=progress)
    if not index.videos:
        raise NoVideosError(f"{data}: no usable videos ({len(index.skipped)} unreadable)")
    skipped = [{"path": s.path, "reason": s.reason} for s in index.skipped]
    root = Path(data)

    def entries():
        bar = tqdm(index.videos, desc="caching latents", unit="video", disable=not progress)
        for v in bar:
            try:
                frames = read_clip(v.path, 0, min(v.num_frames, max_frames) if max_frames else None, 1, size)
            except (VideoError, NotEnoughFramesError) as e:
                warn(f"{v.path}: skipped ({e})")
                skipped.append({"path": v.path, "reason": str(e)})
                continue
            x = frames_to_tensor(frames)  # (T, 3, H, W) in [-1, 1]
            z = encode_frames(ae, x, chunk_size=chunk_size)  # (T, C, h, w), scaled
            # Shot boundaries, so motion windows never span a cut (LatentClips).
            shots = shot_bounds(frames).tolist()
            yield Path(v.path).relative_to(root).as_posix(), z, {"fps": v.fps, "shots": shots}

    from vidm.models.pretrained import latent_fingerprint

    meta = {
        "autoencoder": str(Path(autoencoder).resolve()),
        "autoencoder_config": ae.config.to_dict(),
        "autoencoder_fingerprint": latent_fingerprint(ae),  # checked by `vidm pack`
        "latent_scale": ae.config.latent_scale,
        "size": [size, size],
        "data_root": str(root.resolve()),
        "skipped": skipped,
    }
    write_cache(out, entries(), meta, shard_bytes=shard_mb << 20, dtype=dtypes[dtype])
    cache = LatentCache(out)
    if skipped:
        # Named by the cache's index, not its path: `vidm data cache-latents` writes to a temp name.
        warn(f"{data}: skipped {len(skipped)} file(s) (listed under \"skipped\" in the cache's "
             f"{INDEX_NAME})")
    return cache.index


# ----------------------------------------------------------------------------- reading


class LatentCache:
    """Read access to a cache folder; tensors are read per window (safetensors slices), and the
    shard handles are opened lazily per process (so the object pickles into DataLoader workers)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / INDEX_NAME
        if not path.is_file():
            raise CheckpointError(f"{self.root}: not a latent cache (missing {INDEX_NAME}; "
                                  f"make one with `vidm data cache-latents`)")
        try:
            index = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None
        if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
            raise CheckpointError(f"{path}: not a {CACHE_FORMAT} v{CACHE_VERSION} index")
        for name in index["shards"]:
            if not (self.root / name).is_file():
                raise CheckpointError(f"{self.root / name}: shard missing")
        self.index = index
        self.videos: list[dict] = index["videos"]
        self.latent_shape = tuple(index["latent_shape"] or ())
        self._handles: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.videos)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def _shard(self, i: int):
        from safetensors import safe_open

        if self._pid != os.getpid():  # a forked worker must not reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(i)
        if h is None:
            h = safe_open(str(self.root / self.index["shards"][i]), framework="pt")
            self._handles[i] = h
        return h

    def frames(self, video: int, start: int = 0, stop: int | None = None, step: int = 1):
        """Latents of frames start:stop:step of `video` as float32 (n, C, h, w)."""
        v = self.videos[video]
        stop = v["num_frames"] if stop is None else stop
        sl = self._shard(v["shard"]).get_slice(v["key"])
        z = sl[start:stop].float()  # reads only these frames from the shard
        return z if step == 1 else z[::step].contiguous()


def split_videos(n: int, val: int) -> tuple[list[int], list[int]]:
    """(train, val) video ids: the last `val` videos (sorted order) are held out, never all."""
    val = max(0, min(val, n - 1))
    return list(range(n - val)), list(range(n - val, n))


class LatentFrames:
    """Every frame of the given videos as one example: key (index, seed) -> {"latent": (C, h, w)}."""

    def __init__(self, cache: LatentCache, videos: list[int]):
        self.cache = cache
        self.videos = [i for i in videos if cache.videos[i]["num_frames"] > 0]
        self.offsets = [0]
        for i in self.videos:
            self.offsets.append(self.offsets[-1] + cache.videos[i]["num_frames"])

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        j = bisect.bisect_right(self.offsets, index) - 1
        f = index - self.offsets[j]
        return {"latent": self.cache.frames(self.videos[j], f, f + 1)[0]}


class LatentClips:
    """Random T-frame windows, one example per video: key (index, seed) -> window of video
    `index` with start and stride drawn from a generator seeded by `seed`.

    stride: int or (lo, hi) (uniform, capped per video so the window fits in its longest shot).
    A window never spans a shot cut: the cache's per-video `shots` boundaries (written by
    `cache_latents`; a cache without them counts each video as one shot) limit the starts, and
    the anchor is the first frame of the window's shot (a new shot is a new first frame).
    Videos with no shot as long as one window at the smallest stride are dropped with a warning.
    """

    def __init__(self, cache: LatentCache, videos: list[int], num_frames: int, stride=1, name: str = "data"):
        lo, hi = (stride, stride) if isinstance(stride, int) else tuple(stride)
        if num_frames < 2 or not 1 <= lo <= hi:
            raise ConfigError(f"{name}: need num_frames >= 2 and 1 <= stride lo <= hi, got {num_frames}, {stride}")
        self.cache = cache
        self.T = num_frames
        self.stride = (lo, hi)
        need = (num_frames - 1) * lo + 1
        self.videos = [i for i in videos if max(self.shot_lengths(i)) >= need]
        dropped = len(videos) - len(self.videos)
        if dropped:
            warn(f"{cache.root}: {dropped} video(s) with no shot of {need} frames skipped")

    def shots(self, video: int) -> list[int]:
        """Shot boundaries b (K + 1,) of a video: shot k is frames b[k] .. b[k+1] - 1."""
        v = self.cache.videos[video]
        return list(v.get("shots") or [0, v["num_frames"]])

    def shot_lengths(self, video: int) -> list[int]:
        b = self.shots(video)
        return [b1 - b0 for b0, b1 in zip(b, b[1:])]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key) -> dict:
        import torch

        video, start, span, stride, first = self.draw(key)
        latents = self.cache.frames(video, start, start + span, stride)  # (T, C, h, w)
        anchor = latents[0] if start == first else self.cache.frames(video, first, first + 1)[0]
        # Window-relative times (first frame of the window at 0), as the pipeline samples them:
        # an absolute encoding would meet times at sampling (long videos) it never saw in training.
        times = stride * torch.arange(self.T, dtype=torch.float32)
        return {"latents": latents, "times": times, "anchor": anchor}

    def draw(self, key) -> tuple[int, int, int, int, int]:
        """The window of key (index, seed): (video, start frame, span, stride, its shot's first frame)."""
        import torch

        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        video = self.videos[index]
        bounds, lengths = self.shots(video), self.shot_lengths(video)
        lo, hi = self.stride
        hi = min(hi, (max(lengths) - 1) // (self.T - 1))
        stride = int(torch.randint(lo, hi + 1, (1,), generator=g))
        span = (self.T - 1) * stride + 1
        # One draw over every valid start of every shot that fits the window (for a single shot
        # of n frames: randint(0, n - span + 1), as before shots were tracked).
        starts = [max(0, n - span + 1) for n in lengths]
        flat = int(torch.randint(0, sum(starts), (1,), generator=g))
        k = 0
        while flat >= starts[k]:
            flat -= starts[k]
            k += 1
        first = bounds[k]
        return video, first + flat, span, stride, first


class PairedLatentClips(LatentClips):
    """LatentClips over `cache` with, per window, the same frames from `low`, a cache of the
    same videos at another size (the cascade upsampler's condition): key -> LatentClips' item
    plus "low": (T, C, h', w'). The two caches must hold the same videos, frame for frame."""

    def __init__(self, cache: LatentCache, low: LatentCache, videos: list[int], num_frames: int, stride=1,
                 name: str = "data"):
        check_paired(cache, low, name)
        super().__init__(cache, videos, num_frames, stride, name)
        self.low = low

    def __getitem__(self, key) -> dict:
        video, start, span, stride, _ = self.draw(key)
        item = super().__getitem__(key)
        item["low"] = self.low.frames(video, start, start + span, stride)
        return item


def check_paired(cache: LatentCache, low: LatentCache, name: str = "data") -> None:
    """A ConfigError unless `low` holds the videos of `cache`, in order, with as many frames."""
    a = [(v["path"], v["num_frames"]) for v in cache.videos]
    b = [(v["path"], v["num_frames"]) for v in low.videos]
    if a != b:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        at = lambda v: f"{v[i][0]} ({v[i][1]} frames)" if i < len(v) else "none"  # noqa: E731
        raise ConfigError(f"{name}: the caches {cache.root} and {low.root} do not hold the same videos frame for "
                          f"frame (video {i}: {at(a)} vs {at(b)})")
