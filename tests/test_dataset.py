"""VideoFolder and its index: skipping corrupt files, determinism, workers, the sidecar cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from video_helpers import decode_index, index_frames, truncate

import vidm.data.index as index_mod
from vidm.data import INDEX_NAME, VideoFolder, build_index, frames_to_tensor
from vidm.errors import NoVideosError, VideoError
from vidm.video import read_clip, write_video


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Three good videos (two formats, one nested, one image sequence) + two bad files."""
    d = tmp_path_factory.mktemp("videos")
    (d / "sub" / "deeper").mkdir(parents=True)
    write_video(d / "a.mp4", index_frames(30, 48, 64), fps=8)
    write_video(d / "sub" / "b.webm", index_frames(24, 48, 64), fps=8)
    write_video(d / "sub" / "deeper" / "seq", index_frames(20, 48, 64))
    truncate(d / "a.mp4", d / "sub" / "cut.mp4", 0.6)
    (d / "notes.mp4").write_text("not a video")
    (d / "readme.txt").write_text("ignored: not a video extension")
    return d


@pytest.fixture
def root(source, tmp_path):
    """A fresh copy per test (the index sidecar is written into it)."""
    dst = tmp_path / "root"
    shutil.copytree(source, dst)
    return dst


def test_corrupt_files_are_skipped_with_a_warning_and_counted(root):
    with pytest.warns(UserWarning, match="skipped 2 file"):
        ds = VideoFolder(root, num_frames=8, size=32)
    assert len(ds) == 3
    assert sorted(os.path.basename(s.path) for s in ds.skipped) == ["cut.mp4", "notes.mp4"]
    assert all(s.reason for s in ds.skipped)
    assert sorted(ds.frame_counts) == [20, 24, 30]
    item = ds[0]
    assert item["video"].shape == (8, 3, 32, 32) and item["video"].dtype == torch.float32
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0


def test_too_short_videos_are_skipped_and_no_usable_video_is_an_error(root, tmp_path):
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, num_frames=25)  # only a.mp4 (30 frames) is long enough
    assert [os.path.basename(p) for p in ds.paths] == ["a.mp4"]
    assert sum("too short" in s.reason for s in ds.skipped) == 2
    with pytest.raises(NoVideosError, match="no usable videos"), pytest.warns(UserWarning):
        VideoFolder(root, num_frames=31)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoVideosError, match="empty"):
        VideoFolder(tmp_path / "empty", num_frames=4)
    with pytest.raises(VideoError, match="nowhere: no such file"):
        VideoFolder(tmp_path / "nowhere", num_frames=4)


def _items(ds):
    return [ds[i] for i in range(len(ds))]


def test_same_seed_gives_identical_clips(root):
    kw = dict(num_frames=6, stride=(1, 3), size=32, flip=True, reverse=True)
    with pytest.warns(UserWarning):
        a, b, c = (VideoFolder(root, seed=s, **kw) for s in (7, 7, 8))
    for x, y in zip(_items(a), _items(b)):
        assert torch.equal(x["video"], y["video"])
        assert (x["path"], x["start"], x["stride"]) == (y["path"], y["start"], y["stride"])
    params = [a.clip_params(i) for i in range(len(a))]
    assert params != [c.clip_params(i) for i in range(len(c))]  # another seed, other clips
    a.set_epoch(1)
    assert params != [a.clip_params(i) for i in range(len(a))]  # another epoch, other clips


def test_items_are_the_drawn_frames_flipped_and_reversed(root):
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, num_frames=5, stride=(1, 4), size=None, flip=True,
                         reverse=True, seed=3)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            p, item = ds.clip_params(i), ds[i]
            assert 1 <= p.stride <= 4 and p.start + 4 * p.stride < ds.frame_counts[i]
            frames = read_clip(ds.paths[i], p.start, 5, p.stride)  # (T, H, W, 3)
            want = list(range(p.start, p.start + 5 * p.stride, p.stride))
            assert decode_index(frames) == want
            if p.flip:
                frames = frames[:, :, ::-1]
            if p.reverse:
                frames = frames[::-1]
            assert torch.equal(item["video"], frames_to_tensor(frames))
            seen.add((p.flip, p.reverse))
    assert len(seen) == 4  # every flip / reverse combination happened


def test_dataloader_workers_give_the_same_batches(root):
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, num_frames=4, stride=2, size=16, seed=1)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers)
        batches.append(next(iter(loader)))
    assert batches[0]["video"].shape == (3, 4, 3, 16, 16)  # (B, T, C, H, W)
    assert torch.equal(batches[0]["video"], batches[1]["video"])
    assert batches[0]["start"].tolist() == batches[1]["start"].tolist()


def test_single_frames_and_image_mode_single(root, tmp_path):
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, num_frames=1, stride=(1, 5), size=16)
    assert ds[1]["video"].shape == (1, 3, 16, 16) and ds[1]["stride"] == 1
    images = tmp_path / "images"
    write_video(images, index_frames(4, 16, 64))
    assert len(VideoFolder(images, num_frames=1, size=16)) == 1  # one image sequence
    singles = VideoFolder(images, num_frames=1, size=16, image_mode="single")
    assert len(singles) == 4 and singles.frame_counts == [1, 1, 1, 1]


def test_index_sidecar_is_reused_and_rebuilt_when_files_change(root, monkeypatch):
    first = build_index(root)
    assert (root / INDEX_NAME).exists() and first.cache_written
    probed = []
    real = index_mod.read_video_info
    monkeypatch.setattr(index_mod, "read_video_info",
                        lambda p, verify=False: probed.append(p.name) or real(p, verify))
    again = build_index(root)
    assert probed == [] and again.videos == first.videos and again.skipped == first.skipped
    write_video(root / "a.mp4", index_frames(12, 48, 64))  # changed: new size and mtime
    (root / "notes.mp4").unlink()  # gone: dropped from the index
    third = build_index(root)
    assert probed == ["a.mp4"]
    counts = {os.path.basename(v.path): v.num_frames for v in third.videos}
    assert counts["a.mp4"] == 12 and len(third.skipped) == 1


def test_unwritable_index_stays_in_memory(root):
    (root / INDEX_NAME).mkdir()  # a folder in the way: the sidecar can neither load nor save
    idx = build_index(root)
    assert not idx.cache_written and len(idx.videos) == 3 and len(idx.skipped) == 2


def test_file_that_breaks_after_indexing_is_skipped_at_runtime(root):
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, num_frames=4, size=16, seed=0)
    n_skipped = len(ds.skipped)
    victim = ds.paths.index(str(root / "a.mp4"))
    truncate(root / "a.mp4", root / "a.tmp", 0.4)
    os.replace(root / "a.tmp", root / "a.mp4")
    with pytest.warns(UserWarning, match="a.mp4: skipped while training"):
        item = ds[victim]
    assert item["path"] != str(root / "a.mp4") and item["video"].shape == (4, 3, 16, 16)
    assert len(ds.skipped) == n_skipped + 1
    assert np.isfinite(item["video"].numpy()).all()
