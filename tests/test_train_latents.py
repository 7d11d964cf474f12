"""Latent cache: write/read round trip, frame and window data sets."""

from __future__ import annotations

import json

import pytest
import torch

from vidm.data.latents import LatentCache, LatentClips, LatentFrames, split_videos, write_cache
from vidm.errors import CheckpointError


def make_cache(path, lengths=(5, 9, 12), shard_bytes=1 << 20):
    videos = []
    for i, n in enumerate(lengths):
        # frame t of video i holds the value 100 * i + t everywhere: easy to check what was read
        videos.append((100 * i + torch.arange(n, dtype=torch.float32)).view(n, 1, 1, 1).expand(n, 2, 4, 4).clone())
    entries = ((f"v{i}.mp4", z, {"fps": 8.0}) for i, z in enumerate(videos))
    write_cache(path, entries, {"autoencoder": None, "latent_scale": 1.0, "size": [16, 16]}, shard_bytes=shard_bytes)
    return videos


def test_round_trip_and_shards(tmp_path):
    videos = make_cache(tmp_path / "c", shard_bytes=1)  # one video per shard
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert len(index["shards"]) == 3 and index["latent_shape"] == [2, 4, 4] and index["num_frames"] == 26
    cache = LatentCache(tmp_path / "c")
    for i, z in enumerate(videos):
        assert torch.equal(cache.frames(i), z)
    assert torch.equal(cache.frames(2, 1, 8, 3)[:, 0, 0, 0], torch.tensor([201.0, 204.0, 207.0]))


def test_frames_cover_every_frame(tmp_path):
    make_cache(tmp_path / "c")
    frames = LatentFrames(LatentCache(tmp_path / "c"), [0, 2])
    assert len(frames) == 5 + 12
    values = sorted(float(frames[(i, 0)]["latent"][0, 0, 0]) for i in range(len(frames)))
    assert values == [float(t) for t in range(5)] + [200.0 + t for t in range(12)]


def test_clip_windows_times_and_anchor(tmp_path):
    make_cache(tmp_path / "c")
    clips = LatentClips(LatentCache(tmp_path / "c"), [0, 1, 2], num_frames=4, stride=(1, 3))
    assert len(clips) == 3  # video 0 (5 frames) fits stride 1 only, still usable
    for seed in range(20):
        item = clips[(2, seed)]
        assert item["latents"].shape == (4, 2, 4, 4)
        frame_ids = item["latents"][:, 0, 0, 0] - 200
        # times = positions in the window (first frame at 0), in source-frame units
        assert torch.equal(frame_ids - frame_ids[0], item["times"])
        stride = int(item["times"][1] - item["times"][0])
        assert 1 <= stride <= 3 and torch.equal(item["times"].diff(), torch.full((3,), float(stride)))
        assert float(item["anchor"][0, 0, 0]) == 200.0  # the video's first frame
    # Same key, same window; the window depends on the seed.
    assert torch.equal(clips[(1, 7)]["latents"], clips[(1, 7)]["latents"])
    assert len({float(clips[(2, s)]["latents"][0, 0, 0, 0]) for s in range(20)}) > 3
    with pytest.warns(UserWarning, match="shorter than"):
        short = LatentClips(LatentCache(tmp_path / "c"), [0, 1], num_frames=6, stride=1)
    assert len(short) == 1


def test_split_and_errors(tmp_path):
    assert split_videos(10, 3) == (list(range(7)), [7, 8, 9])
    assert split_videos(1, 3) == ([0], [])  # never hold out everything
    with pytest.raises(CheckpointError, match="not a latent cache"):
        LatentCache(tmp_path)
