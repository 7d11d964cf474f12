"""`vidm eval interpolate` / `vidm eval generate` on a tiny random pipeline (16x16, 2 steps) and
three small synthetic videos: the report files, their numbers (checked against independent
computations), the clip choice, the batched pipeline calls, the feature space, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from test_pipeline import _tiny_pipeline

GAPS = (2, 4)
METHODS = ("model", "model_best_of_2", "crossfade", "flow")
METRICS = ("psnr", "ssim", "pos_err", "miss_rate")


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return _tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("model") / "pipe")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from vidm.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, videos=3, frames=12, size=16, progress=False)
    return root


def _main(args):
    from vidm.cli import main

    return main([*args, "--quiet"])


# ---------------------------------------------------------------------- interpolate


@pytest.fixture(scope="module")
def interp_report(model_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("interp") / "report"
    rc = _main(["eval", "interpolate", "--model", str(model_dir), "--data", str(data_dir), "--gaps", "2,4",
                "--clips", "3", "--samples", "2", "--steps", "2", "--batch", "2", "--out", str(out)])
    assert rc == 0
    return out


def test_interpolate_writes_three_files_with_every_number(interp_report):
    out = interp_report
    assert sorted(p.name for p in out.iterdir()) == [".vidm-output", "report.json", "report.md", "report.png"]
    r = json.loads((out / "report.json").read_text())
    assert r["kind"] == "vidm-eval-interpolate" and r["gaps"] == list(GAPS) and r["methods"] == list(METHODS)
    assert len(r["clips"]) == 3 and r["settings"]["steps"] == 2
    for m in METHODS:
        for g in GAPS:
            for k in METRICS:
                s = r["summary"][m][str(g)][k]
                assert s["n"] >= 1 and math.isfinite(s["mean"]), (m, g, k)
                assert len(r["per_clip"][m][str(g)][k]) == 3
            assert r["summary"]["model"][str(g)]["diversity"]["mean"] > 0  # two samples differ
    # best-of-2 by PSNR is never below the mean over the two samples, clip by clip
    for g in GAPS:
        best, mean = (np.array(r["per_clip"][m][str(g)]["psnr"]) for m in ("model_best_of_2", "model"))
        assert (best >= mean - 1e-9).all()
    assert set(r["paired"]) == {"model - crossfade", "model - flow"}
    # every clip holds the frames the largest gap needs, inside its video
    for c in r["clips"]:
        assert c["frames"] == max(GAPS) + 1 and c["start"] + max(GAPS) < 12
    md = (out / "report.md").read_text()
    assert "| 4 | flow |" in md and "t-interval" in md and "model - flow" in md
    from PIL import Image

    with Image.open(out / "report.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300


def test_interpolate_crossfade_psnr_matches_an_independent_computation(interp_report):
    from vidm.video import read_clip

    r = json.loads((interp_report / "report.json").read_text())
    clip = r["clips"][0]
    g = 4
    frames = read_clip(clip["video"], start=clip["start"], num_frames=g + 1).astype(np.float64)
    psnrs = []
    for i in range(1, g):
        t = i / g
        mid = np.clip(np.rint((1 - t) * frames[0] + t * frames[g]), 0, 255)
        mse = np.mean((mid - frames[i]) ** 2)
        psnrs.append(10 * np.log10(255.0**2 / mse))
    assert r["per_clip"]["crossfade"][str(g)]["psnr"][0] == pytest.approx(np.mean(psnrs), abs=1e-9)


def test_interpolate_baselines_only_needs_no_model(data_dir, tmp_path):
    out = tmp_path / "base"
    rc = _main(["eval", "interpolate", "--model", str(tmp_path / "no-such-model"), "--data", str(data_dir),
                "--gaps", "2", "--clips", "2", "--methods", "crossfade", "--no-plot", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [".vidm-output", "report.json", "report.md"]
    r = json.loads((out / "report.json").read_text())
    assert r["methods"] == ["crossfade"] and r["paired"] == {}


def test_interpolate_at_several_sizes_reports_each(data_dir, tmp_path):
    out = tmp_path / "sizes"
    rc = _main(["eval", "interpolate", "--data", str(data_dir), "--gaps", "2", "--clips", "2",
                "--methods", "crossfade", "--size", "16,24", "--no-plot", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["sizes"] == [16, 24] and set(r["by_size"]) == {"16", "24"}
    assert [c["height"] for c in r["by_size"]["24"]["clips"]] == [24, 24]
    assert r["by_size"]["16"]["clips"][0]["start"] == r["by_size"]["24"]["clips"][0]["start"]  # same clips
    md = (out / "report.md").read_text()
    assert "## 16x16" in md and "## 24x24" in md


def test_interpolate_splat_alone_scores_the_pipelines_splat_start(pipe, model_dir, data_dir, tmp_path):
    from vidm.eval.interpolate_eval import clip_metrics, cut_clips

    out = tmp_path / "splat"
    rc = _main(["eval", "interpolate", "--model", str(model_dir), "--data", str(data_dir), "--gaps", "4",
                "--clips", "2", "--methods", "splat,crossfade", "--no-plot", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["methods"] == ["splat", "crossfade"] and r["paired"] == {}
    clip = cut_clips(data_dir, 2, 5, seed=0)[0]
    mids = pipe.splat_batch(clip.frames[None, 0], clip.frames[None, 4], 3)[0, 0]
    # the eval ran both clips in one batch: conv rounding may flip a pixel's last uint8 step
    assert r["per_clip"]["splat"]["4"]["psnr"][0] == pytest.approx(clip_metrics(mids, clip, 4, False)["psnr"],
                                                                    abs=0.01)


# ---------------------------------------------------------------------- library pieces


def test_clip_choice_is_seeded_distinct_and_in_range(data_dir):
    from vidm.eval.interpolate_eval import choose_clips, index_videos

    videos = index_videos(data_dir).videos
    a = choose_clips(videos, 6, 5, seed=0)
    assert [(v.path, s) for v, s in a] == [(v.path, s) for v, s in choose_clips(videos, 6, 5, seed=0)]
    assert [(v.path, s) for v, s in a] != [(v.path, s) for v, s in choose_clips(videos, 6, 5, seed=1)]
    assert len({(v.path, s) for v, s in a}) == 6
    assert all(0 <= s and s + 5 <= v.num_frames for v, s in a)
    # asking for more clips than there are positions gives every position once
    assert len(choose_clips(videos, 1000, 12, seed=0)) == 3


def test_interpolate_batch_matches_the_pipeline(pipe):
    from vidm.eval.interpolate_eval import interpolate_batch

    rng = np.random.default_rng(0)
    s, e = rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)
    one = interpolate_batch(pipe, s[:1], e[:1], 3, samples=2, seed=5)
    assert np.array_equal(one[0], pipe.interpolate(s[0], e[0], num_frames=3, samples=2, seed=5))
    assert interpolate_batch(pipe, s, e, 3, samples=2, seed=5).shape == (2, 2, 3, 16, 16, 3)


def test_video_features_and_frechet_by_group():
    from vidm.eval.generate_eval import FEATURE_DIM, FEATURE_GROUPS, frechet_by_group, video_features

    rng = np.random.default_rng(0)
    moving = rng.integers(0, 256, (4, 6, 16, 16, 3), dtype=np.uint8)
    static = np.repeat(moving[:, :1], 6, axis=1)
    f_moving, f_static = video_features(moving), video_features(static)
    assert f_moving.shape == (4, FEATURE_DIM)
    motion = FEATURE_GROUPS["motion"]
    assert np.allclose(f_static[:, motion][:, 8:], 0, atol=1e-6)  # no differences at any lag, no jerk
    assert np.allclose(f_static[:, motion][:, 0], 1)  # every difference in the first bin
    fd = frechet_by_group(f_moving, f_moving)
    assert all(v < 1e-9 for v in fd.values())
    fd = frechet_by_group(f_moving, f_static)
    assert fd["motion"] > 0.01 and fd["colour"] < fd["motion"]


# ---------------------------------------------------------------------- generate


def test_generate_writes_reports_and_grids(model_dir, data_dir, tmp_path):
    out = tmp_path / "gen"
    rc = _main(["eval", "generate", "--model", str(model_dir), "--data", str(data_dir), "--num", "3",
                "--frames", "5", "--context", "2", "--steps", "2", "--out", str(out)])
    assert rc == 0
    assert {"report.json", "report.md", "report.png", "samples_generated.png"} <= {p.name for p in out.iterdir()}
    r = json.loads((out / "report.json").read_text())
    assert r["features"] == "stats-v1" and r["fvd"] is None
    for name in ("generated", "predicted", "copy-last"):
        for group in ("all", "colour", "layout", "texture", "motion"):
            assert r["frechet"][name][group] >= 0 and math.isfinite(r["frechet"][name][group])
    for m in ("model", "copy-last"):
        assert math.isfinite(r["prediction"]["summary"][m]["psnr"]["mean"])
    assert "FVD: not computed" in (out / "report.md").read_text()


def test_generate_fvd_code_path_with_a_random_i3d(pipe):
    from vidm.eval.generate_eval import evaluate_generation
    from vidm.eval.i3d import InceptionI3d

    torch.manual_seed(0)
    i3d = InceptionI3d().eval()
    real = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
    res = evaluate_generation(pipe, real, context=2, steps=2, i3d=i3d, i3d_size=32)
    assert set(res.report["fvd"]) == {"generated", "predicted", "copy-last"}
    assert all(math.isfinite(v) and v >= 0 for v in res.report["fvd"].values())
    assert res.videos["predicted"].shape == real.shape
    assert np.array_equal(res.videos["predicted"][:, :2], real[:, :2])  # the given frames stay


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["missing_data", "no_videos", "too_short", "bad_gaps", "gap_one",
                                  "missing_model", "bad_method", "bad_size", "out_is_file", "gen_missing_i3d",
                                  "gen_context"])
def test_bad_input_is_one_line_and_writes_nothing(case, model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    interp = ["eval", "interpolate", "--model", str(model_dir), "--data", str(data_dir), "--clips", "2",
              "--steps", "2", "--out", str(out)]
    gen = ["eval", "generate", "--model", str(model_dir), "--data", str(data_dir), "--num", "2", "--frames", "6",
           "--steps", "2", "--out", str(out)]
    args, match = {
        "missing_data": (interp + ["--data", str(tmp_path / "nope")], "no such folder"),
        "no_videos": (interp + ["--data", str(empty)], "no usable videos"),
        "too_short": (interp + ["--gaps", "2,16"], "17 frames"),
        "bad_gaps": (interp + ["--gaps", "2,x"], "--gaps"),
        "gap_one": (interp + ["--gaps", "1,2"], ">= 2"),
        "missing_model": (interp + ["--model", str(tmp_path / "nomodel")], "model folder not found"),
        "bad_method": (interp + ["--methods", "model,film"], "film"),
        "bad_size": (interp + ["--size", "64,x"], "--size"),
        "out_is_file": (interp + ["--out", str(tmp_path / "file.txt")], "not a folder"),
        "gen_missing_i3d": (gen + ["--i3d", str(tmp_path / "i3d.pt")], "i3d"),
        "gen_context": (gen + ["--context", "6"], "--context"),
    }[case]
    if case == "out_is_file":
        (tmp_path / "file.txt").write_text("x")
    rc = _main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("vidm: error: ") and match in err[-1]
    assert not out.exists()
