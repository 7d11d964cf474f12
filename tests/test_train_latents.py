"""Latent cache: write/read round trip, frame and window data sets."""

from __future__ import annotations

import json

import pytest
import torch

from vidm.data.latents import LatentCache, LatentClips, LatentFrames, split_videos, write_cache
from vidm.errors import CheckpointError


def make_cache(path, lengths=(5, 9, 12), shard_bytes=1 << 20, shots=None):
    videos = []
    for i, n in enumerate(lengths):
        # frame t of video i holds the value 100 * i + t everywhere: easy to check what was read
        videos.append((100 * i + torch.arange(n, dtype=torch.float32)).view(n, 1, 1, 1).expand(n, 2, 4, 4).clone())
    shots = shots or [None] * len(lengths)
    entries = ((f"v{i}.mp4", z, {"fps": 8.0, **({"shots": b} if b else {})})
               for i, (z, b) in enumerate(zip(videos, shots)))
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
    with pytest.warns(UserWarning, match="no shot of 6 frames"):
        short = LatentClips(LatentCache(tmp_path / "c"), [0, 1], num_frames=6, stride=1)
    assert len(short) == 1


def test_clip_windows_stay_inside_one_shot(tmp_path):
    # video 1: shots 0-2 (too short for 4 frames), 3-9, 10-19; video 0: one 12-frame shot
    make_cache(tmp_path / "c", lengths=(12, 20), shots=[[0, 12], [0, 3, 10, 20]])
    clips = LatentClips(LatentCache(tmp_path / "c"), [0, 1], num_frames=4, stride=(1, 3))
    seen = set()
    for seed in range(200):
        item = clips[(1, seed)]
        ids = [int(v) - 100 for v in item["latents"][:, 0, 0, 0]]
        shot = 1 if ids[0] < 10 else 2
        first, last = (3, 9) if shot == 1 else (10, 19)
        assert first <= ids[0] and ids[-1] <= last, ids  # never across a cut
        assert int(item["anchor"][0, 0, 0]) - 100 == first  # the shot's first frame
        seen.add((shot, ids[1] - ids[0]))
    # both long shots are used; stride 3 fits shot 2 (10 frames) but not shot 1 (7 frames)
    assert {s for s, _ in seen} == {1, 2} and (2, 3) in seen and (1, 3) not in seen
    long = LatentClips(LatentCache(tmp_path / "c"), [0, 1], num_frames=8, stride=(1, 2))
    assert len(long) == 2 and all(10 <= int(long[(1, s)]["latents"][0, 0, 0, 0]) - 100 for s in range(20))
    with pytest.warns(UserWarning, match="no shot of 11 frames"):
        assert LatentClips(LatentCache(tmp_path / "c"), [0, 1], num_frames=11, stride=1).videos == [0]


def test_clip_windows_without_shots_are_as_with_one_shot(tmp_path):
    """A cache written before shots were tracked samples exactly as one with a single shot."""
    make_cache(tmp_path / "old", lengths=(12,))
    make_cache(tmp_path / "new", lengths=(12,), shots=[[0, 12]])
    old = LatentClips(LatentCache(tmp_path / "old"), [0], num_frames=4, stride=(1, 3))
    new = LatentClips(LatentCache(tmp_path / "new"), [0], num_frames=4, stride=(1, 3))
    for seed in range(30):
        a, b = old[(0, seed)], new[(0, seed)]
        assert all(torch.equal(a[k], b[k]) for k in ("latents", "times", "anchor"))


def test_split_and_errors(tmp_path):
    assert split_videos(10, 3) == (list(range(7)), [7, 8, 9])
    assert split_videos(1, 3) == ([0], [])  # never hold out everything
    with pytest.raises(CheckpointError, match="not a latent cache"):
        LatentCache(tmp_path)


def test_cache_latents_records_shot_cuts(tmp_path):
    """`cache_latents` stores each video's shot boundaries, so motion windows skip the cut."""
    import numpy as np

    from vidm.data.latents import cache_latents
    from vidm.pipeline.pipeline import resolve_model
    from vidm.video import write_video

    rng = np.random.default_rng(0)
    calm = np.full((6, 64, 64, 3), 60, np.uint8) + rng.integers(0, 4, (6, 64, 64, 3), dtype=np.uint8)
    other = np.full((7, 64, 64, 3), 200, np.uint8) + rng.integers(0, 4, (7, 64, 64, 3), dtype=np.uint8)
    (tmp_path / "data").mkdir()
    write_video(tmp_path / "data" / "cut.mp4", np.concatenate([calm, other]), fps=8)
    write_video(tmp_path / "data" / "calm.mp4", calm, fps=8)
    ae = resolve_model("synth-tiny") / "autoencoder"
    index = cache_latents(ae, tmp_path / "data", tmp_path / "cache", size=64, progress=False)
    shots = {v["path"]: v["shots"] for v in index["videos"]}
    assert shots == {"calm.mp4": [0, 6], "cut.mp4": [0, 6, 13]}
    clips = LatentClips(LatentCache(tmp_path / "cache"), [0, 1], num_frames=4, stride=1)
    cut = [v["path"] for v in index["videos"]].index("cut.mp4")
    z = LatentCache(tmp_path / "cache").frames(cut)
    for seed in range(20):
        item = clips[(clips.videos.index(cut), seed)]
        starts = [i for i in range(len(z) - 3) if torch.equal(z[i:i + 4], item["latents"])]
        assert starts and (starts[0] + 3 < 6 or starts[0] >= 6)
