"""Synthetic generator: determinism, ground truth matching the rendered (and encoded) frames."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from vidm.data.synth import (MOTIONS, PALETTE, SHAPES, colour_centroid, generate_dataset,
                             render_video)
from vidm.errors import ConfigError
from vidm.video import read_clip


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    generate_dataset(d, videos=4, frames=16, size=64, seed=0, progress=False)
    return d


def test_json_positions_match_the_decoded_objects(synth_dir):
    checked = 0
    for mp4 in sorted(synth_dir.glob("*.mp4")):
        meta = json.loads(mp4.with_suffix(".json").read_text())
        frames = read_clip(mp4)  # (T, H, W, 3) after H.264 yuv420p
        assert frames.shape == (16, 64, 64, 3) and meta["video"] == mp4.name
        for obj, t in itertools.product(meta["objects"], range(16)):
            if obj["visible_fraction"][t] < 0.97:  # partly hidden or off-frame
                continue
            c, _ = colour_centroid(frames[t], obj["colour"])
            assert c is not None
            err = np.hypot(c[0] - obj["x"][t], c[1] - obj["y"][t])
            assert err < 2.0, (mp4.name, obj["id"], t, err)
            checked += 1
    assert checked > 60


def test_objects_that_are_gone_are_not_found_and_colours_are_distinct():
    for index in range(6):
        frames, meta = render_video(0, index, 16, 64)  # exact frames, before encoding
        names = [o["colour_name"] for o in meta["objects"]]
        assert len(set(names)) == len(names) and 2 <= len(names) <= 5
        for obj, t in itertools.product(meta["objects"], range(16)):
            if obj["visible_fraction"][t] == 0:
                c, n = colour_centroid(frames[t], obj["colour"])
                assert n == 0  # nothing of that colour anywhere: backgrounds stay grey
            assert obj["visible"][t] == (obj["visible_fraction"][t] >= 0.05)
    colours = np.array(list(PALETTE.values()), float)
    dists = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert dists[~np.eye(len(colours), dtype=bool)].min() > 2 * 80  # twice the tolerance


def test_motions_shapes_occlusion_and_exits_all_occur():
    shapes, motions, occluded, exits, rotating, fast = set(), set(), 0, 0, 0, 0
    for index in range(12):
        _, meta = render_video(1, index, 20, 64)
        for o in meta["objects"]:
            shapes.add(o["shape"])
            motions.add(o["motion"])
            vf, inf = np.array(o["visible_fraction"]), np.array(o["in_frame"])
            occluded += bool(np.any(inf - vf > 0.3))  # hidden behind a nearer object
            exits += bool(inf.max() > 0.9 and inf.min() == 0)  # on screen, then off
            rotating += o["angular_velocity"] != 0
            fast += np.hypot(np.diff(o["x"]), np.diff(o["y"])).max() > 6  # px per frame
    assert shapes == set(SHAPES) and motions == set(MOTIONS)
    assert occluded >= 3 and exits >= 3 and rotating >= 10 and fast >= 8


def test_same_seed_same_data_whatever_the_worker_count(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_dataset(a, videos=3, frames=8, size=32, seed=5, workers=0, progress=False)
    generate_dataset(b, videos=3, frames=8, size=32, seed=5, workers=2, progress=False)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 6
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
    f1, _ = render_video(5, 0, 8, 32)
    f2, _ = render_video(6, 0, 8, 32)
    assert not np.array_equal(f1, f2)


def test_bad_arguments(tmp_path):
    for kw in (dict(videos=0), dict(size=63), dict(size=8), dict(frames=1)):
        args = dict(videos=1, frames=4, size=32, progress=False) | kw
        with pytest.raises(ConfigError):
            generate_dataset(tmp_path / "x", **args)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        generate_dataset(tmp_path / "file", videos=1, progress=False)
