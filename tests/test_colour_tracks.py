"""Colour-centroid track length (vidm/eval/colour_tracks.py): rendered synthetic videos are
tracked whole, a colour change or a far jump ends a track at that frame, the totals, bad
input, scripts/colour_tracks.py and the `vidm eval generate` hook."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vidm.data.synth import PALETTE
from vidm.errors import ConfigError, NoVideosError, ShapeError, VidmError, VideoError
from vidm.eval.colour_tracks import is_synthetic, markdown, summarise, track_lengths

RED, BLUE, GREEN = PALETTE["red"], PALETTE["blue"], PALETTE["green"]


def _video(T: int, S: int, squares) -> np.ndarray:
    """Grey uint8 (T, S, S, 3) with flat squares: squares = [(colour_fn(t), xy_fn(t), side)]."""
    v = np.full((T, S, S, 3), 128, np.uint8)
    for t in range(T):
        for colour, xy, side in squares:
            x, y = xy(t)
            v[t, y:y + side, x:x + side] = colour(t)
    return v


def _find(tracks, name) -> int:
    return int(tracks.lengths[tracks.names.index(name)])


# ---------------------------------------------------------------------- rendered synthetic videos


def test_rendered_synthetic_objects_are_tracked_through_all_frames():
    from vidm.data.synth import render_video

    T, checked = 12, 0
    for index in range(6):
        frames, meta = render_video(3, index, num_frames=T, size=64)
        tr = track_lengths(frames)
        assert tr.centroids.shape == (T, tr.objects, 2) and tr.num_frames == T
        for o in meta["objects"]:
            vis = np.asarray(o["visible_fraction"])
            if vis[0] == 0:  # hidden or outside in frame 0: not an object of this video's tracks
                assert o["colour_name"] not in tr.names
            if vis.min() >= 0.6:  # visible throughout: tracked through every frame, at its place
                assert _find(tr, o["colour_name"]) == T, (index, o["colour_name"])
                c = tr.centroids[:, tr.names.index(o["colour_name"])]
                gt = np.stack([o["x"], o["y"]], 1)
                assert np.abs(c - gt).max() < 0.3 * o["size"] + 1 or vis.min() < 0.95
                checked += 1
    assert checked >= 8  # the seeds really exercise the claim


def test_mp4_round_trip_of_a_synthetic_set_via_the_script(tmp_path, capsys):
    from vidm.data.synth import generate_dataset

    paths = generate_dataset(tmp_path / "real", videos=2, frames=8, size=64, seed=1, progress=False)
    assert all(is_synthetic(p) for p in paths)
    main = _script()
    assert main([str(tmp_path / "real"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["videos"] == 2 and s["objects"] >= 2 and s["paths"] == [str(p) for p in paths]
    assert s["mean_track_fraction"] > 0.8  # H.264 keeps the flat colours
    assert main([str(paths[0])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{paths[0]}: 8 frames, ") and out[-1].startswith("total: 1 video ")


# ---------------------------------------------------------------------- hand-made videos


def test_colour_change_at_frame_k_ends_that_track_at_k():
    T, k = 10, 4
    v = _video(T, 48, [(lambda t: RED if t < k else GREEN, lambda t: (4 + t, 6), 6),  # moves 1 px/frame
                       (lambda t: BLUE, lambda t: (30, 30), 6)])
    tr = track_lengths(v)
    assert sorted(tr.names) == ["blue", "red"]  # green appears only later: not a frame-0 object
    assert _find(tr, "red") == k and _find(tr, "blue") == T
    red = tr.names.index("red")
    assert np.allclose(tr.centroids[:k, red], [[7 + t, 9] for t in range(k)])  # square centre, px
    assert np.isnan(tr.centroids[k:, red]).all()
    assert tr.mean_frames == (k + T) / 2 and tr.mean_fraction == (k + T) / (2 * T) and tr.full_share == 0.5


def test_a_far_jump_loses_the_object_at_the_jump():
    T, j = 10, 6
    v = _video(T, 64, [(lambda t: BLUE, lambda t: (5 + t, 5) if t < j else (45, 45), 6)])  # jumps ~56 px
    assert _find(track_lengths(v), "blue") == j  # default max_jump 0.25 x 64 = 16 px
    assert _find(track_lengths(v, max_jump=60.0), "blue") == T


def test_a_colour_that_comes_back_later_does_not_extend_a_lost_track():
    T = 8
    v = _video(T, 48, [(lambda t: RED if t != 3 else (128, 128, 128), lambda t: (10, 10), 6)])
    assert _find(track_lengths(v), "red") == 3


def test_nearest_blob_counts_not_the_largest_and_specks_are_ignored():
    T = 8
    # From frame 2 a bigger red patch travels 14 px below the square (within max_jump 16, gap 7 px):
    # the track stays on the square, the nearer blob.
    v = _video(T, 64, [(lambda t: RED, lambda t: (5 + t, 5), 6),
                       (lambda t: RED if t >= 2 else (128, 128, 128), lambda t: (5 + t, 18), 8)])
    v[0, 60:62, 60:62] = BLUE  # a 4-pixel speck: below min_pixels, not an object
    tr = track_lengths(v)
    assert tr.names == ["red"] and _find(tr, "red") == T
    assert np.allclose(tr.centroids[:, 0], [[8 + t, 8] for t in range(T)])  # the square's centre, every frame


def test_an_object_cut_by_a_thin_nearer_one_stays_one_blob():
    T = 6
    v = _video(T, 48, [(lambda t: RED, lambda t: (10, 10), 10)])
    v[2:, :, 14:16] = 60  # from frame 2 a 2 px bar splits the red square into 4 + 4 px wide halves
    tr = track_lengths(v, max_jump=1.0)  # plain components: the half's centroid moves 2.5 px
    assert _find(tr, "red") == T
    assert _find(track_lengths(v, max_jump=1.0, join_radius=0), "red") == 2


def test_summarise_pools_over_objects_and_counts_empty_videos():
    T = 6
    a = _video(T, 32, [(lambda t: RED if t < 3 else GREEN, lambda t: (4, 4), 6),
                       (lambda t: BLUE, lambda t: (20, 20), 6)])
    empty = np.full((T, 32, 32, 3), 128, np.uint8)
    s = summarise(np.stack([a, empty]))
    assert s["videos"] == 2 and s["videos_without_objects"] == 1 and s["objects"] == 2
    assert s["objects_per_video"] == 1.0
    assert s["mean_track_frames"] == 4.5 and s["mean_track_fraction"] == 0.75 and s["full_track_share"] == 0.5
    assert s["per_video"][0] == {"frames": T, "objects": 2, "mean_track_frames": 4.5,
                                 "mean_track_fraction": 0.75, "full_track_share": 0.5}
    assert s["per_video"][1]["objects"] == 0 and math.isnan(s["per_video"][1]["mean_track_frames"])
    # Lengths over each video's own T when the videos differ in length.
    s = summarise([a, a[:3]])
    assert s["mean_track_fraction"] == pytest.approx((3 / 6 + 1 + 1 + 1) / 4)
    md = markdown({"generated": s})
    assert "| generated | 2 | 2.00 | 3.75 | 0.875 | 0.750 |" in md


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("video", [np.zeros((4, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8),
                                   np.zeros((0, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 4), np.uint8),
                                   [[1, 2]]])
def test_bad_videos_are_shape_errors(video):
    with pytest.raises(ShapeError, match="colour tracks"):
        track_lengths(video)


@pytest.mark.parametrize("kwargs", [{"tol": 0}, {"tol": float("nan")}, {"min_pixels": 0}, {"min_pixels": 2.5},
                                    {"max_jump": -1.0}, {"join_radius": -1}, {"colours": [[1, 2]]},
                                    {"colours": np.zeros((0, 3))}])
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match="colour tracks"):
        track_lengths(np.zeros((2, 8, 8, 3), np.uint8), **kwargs)


def test_summarise_bad_input():
    with pytest.raises(NoVideosError, match="no videos"):
        summarise([])
    with pytest.raises(ShapeError, match="one"):
        summarise(np.zeros((2, 8, 8, 3), np.uint8))  # one video, not N
    assert issubclass(NoVideosError, VidmError)


def test_is_synthetic(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"format": "vidm-synth-1", "objects": []}))
    (tmp_path / "b.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "c.json").write_text("{not json")
    assert is_synthetic(tmp_path / "a.mp4")
    assert not any(is_synthetic(tmp_path / f"{n}.mp4") for n in "bcd")


# ---------------------------------------------------------------------- the script


def _script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "colour_tracks.py"
    spec = importlib.util.spec_from_file_location("colour_tracks_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _rc(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse: usage errors and --help
        return e.code


def test_script_bad_input_is_one_line_and_status_1(tmp_path, capsys):
    main = _script()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.mp4").write_text("not a video")
    for argv in ([str(tmp_path / "missing.mp4")], [str(tmp_path / "empty")], [str(tmp_path / "notes.mp4")],
                 [str(tmp_path / "notes.mp4"), "--max-frames", "0"], [str(tmp_path / "empty"), "--tol", "x"], []):
        rc = _rc(main, argv)
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith("colour_tracks: error: ") and err.count("\n") == 1, (argv, err)
    assert _rc(main, ["--help"]) == 0 and "VIDEO_OR_FOLDER" in capsys.readouterr().out


def test_script_reads_a_written_video(tmp_path, capsys):
    from vidm.video import write_video

    v = _video(6, 32, [(lambda t: RED, lambda t: (4 + t, 4), 6)])
    write_video(tmp_path / "a.mp4", v, fps=8)
    assert _script()([str(tmp_path / "a.mp4"), "--max-frames", "4"]) == 0
    assert "4 frames, 1 object, track 4.00 frames (1.000 of T), all T 1.000" in capsys.readouterr().out


# ---------------------------------------------------------------------- `vidm eval generate`


class _FakePipe:
    """Stands in for a VideoPipeline: generate() returns a moving red square that turns green
    at frame 3; predict_batch() repeats the last given frame."""

    class config:
        size = 32

    def generate(self, num_frames, num_videos, seed=0, **kw):
        v = _video(num_frames, 32, [(lambda t: RED if t < 3 else GREEN, lambda t: (4 + t, 4), 6)])
        return np.repeat(v[None], num_videos, 0)

    def predict_batch(self, given, num_future, seed=0, **kw):
        return np.repeat(given[:, None, -1:], num_future, 2)


def test_evaluate_generation_adds_colour_tracks_on_request():
    from vidm.eval.generate_eval import evaluate_generation

    real = np.stack([_video(8, 32, [(lambda t: BLUE, lambda t: (4 + t, 10), 6)]) for _ in range(2)])
    rep = evaluate_generation(_FakePipe(), real, context=2, colour_tracks=True).report
    assert rep["colour_tracks"]["generated"]["mean_track_frames"] == 3
    assert rep["colour_tracks"]["real"]["full_track_share"] == 1
    assert evaluate_generation(_FakePipe(), real, context=2).report["colour_tracks"] is None
