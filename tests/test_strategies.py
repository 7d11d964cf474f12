"""Interpolation strategies (issue 14 item 3) on tiny random models: infill unchanged, the
dual-directional strategies (bidirectional with the backward stage, time-reversal with the motion
model both ways) keep known frames exact, mirror exactly under time reversal, reuse one fusion
path, re-inject noise as declared, and bad input is one line."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from model_helpers import eval_interpolate
from test_pipeline import SIZE, _frames, _png, _randomise, _tiny_pipeline
from vidm.diffusion import Denoiser, get_sigmas_karras, leading_known, reinjected_steps, reverse_times
from vidm.diffusion.sampling import sample_window_dual
from vidm.errors import ConfigError
from vidm.pipeline import VideoPipeline
from vidm.pipeline.options import STRATEGIES

SAMPLERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral")


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    torch.manual_seed(0)
    return _tiny_pipeline()


def _with_backward(pipe: VideoPipeline, backward: torch.nn.Module) -> VideoPipeline:
    return VideoPipeline(pipe.autoencoder, pipe.content, pipe.motion, pipe.config, device="cpu", dtype="fp32",
                         stages={"backward": backward})


@pytest.fixture(scope="module")
def dual(pipe) -> VideoPipeline:
    """The pipeline with a backward stage: the motion model's own network, copied."""
    return _with_backward(pipe, copy.deepcopy(pipe.motion))


def _window(T: int = 5, seed: int = 0):
    """x_known (1, T, 4, 4, 4) with its two end frames known, known (1, T), times (1, T)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, T, 4, 4, 4, generator=g)
    known = torch.zeros(1, T, dtype=torch.bool)
    known[:, [0, -1]] = True
    return z, known, torch.arange(float(T))[None]


def test_masks_and_times_of_the_two_directions():
    known = torch.tensor([[True, False, False, True], [True, True, False, True], [False, False, False, False]])
    assert leading_known(known).tolist() == [[True, False, False, False], [True, True, False, False],
                                            [False] * 4]
    assert leading_known(known.flip(1)).flip(1).tolist() == [[False, False, False, True],
                                                           [False, False, False, True], [False] * 4]
    assert leading_known(torch.ones(1, 3, dtype=torch.bool)).all()  # nothing to make: all conditioning
    assert reverse_times(torch.tensor([[0.0, 1.0, 3.0]])).tolist() == [[0.0, 2.0, 3.0]]


def test_infill_is_the_default_and_unchanged(pipe, dual):
    s, e = _frames(2)
    plain = pipe.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral")
    assert np.array_equal(plain, pipe.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral",
                                                  strategy="infill"))
    assert np.array_equal(plain, dual.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral"))
    clip = _frames(3, seed=4)
    assert np.array_equal(pipe.interpolate_video(clip, 2, seed=1), dual.interpolate_video(clip, 2, seed=1,
                                                                                           strategy="infill"))
    tr = dual.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral", strategy="time-reversal")
    assert tr.shape == plain.shape and not np.array_equal(tr, plain)


@pytest.mark.parametrize("strategy", ["bidirectional", "time-reversal"])
def test_known_frames_stay_exact(dual, strategy):
    z, _, times = _window()
    for known in (torch.tensor([[True, False, False, False, True]]), torch.tensor([[True, True, False, True, True]]),
                  torch.tensor([[True, False, True, False, True]])):  # end frames, a run, an upsampling window
        for sampler in SAMPLERS:
            g = torch.Generator().manual_seed(0)
            out = dual.sample_window(z, known, times, z[:, 0], g, 2, sampler, guidance=2.0, strategy=strategy,
                                     reinject=1)
            assert torch.equal(out[known], z[known]), (known, sampler)
            assert not torch.equal(out[~known], z[~known])
    s, e = _frames(2)
    clip = _frames(3, seed=1)
    assert np.array_equal(dual.interpolate_video(clip, 3, seed=0, strategy=strategy)[0, ::3], clip)
    assert dual.interpolate(s, e, num_frames=9, seed=0, strategy=strategy).shape == (1, 9, SIZE, SIZE, 3)


@pytest.mark.parametrize("sampler", ["heun", "euler_ancestral"])
def test_one_network_both_ways_mirrors_exactly_under_time_reversal(pipe, sampler):
    """Forward and backward the same network (two copies), own attention: swapping start and end,
    with every noise draw reversed too, gives the reversed window bit for bit."""
    forward, backward = pipe.motion_denoiser, Denoiser(copy.deepcopy(pipe.motion), pipe.config.sigma_data)
    z, known, times = _window(T=6)
    sigmas = get_sigmas_karras(3, 0.002, 80.0, dtype=torch.float32)

    def run(x, reverse_noise):
        g = torch.Generator().manual_seed(7)
        return sample_window_dual(forward, backward, x, known, sigmas, sampler, g, guidance=1.5,
                                  cond={"times": times, "anchor": x[:, 0]}, backward_anchor=x[:, -1],
                                  reinject=1, reverse_noise=reverse_noise)

    a = run(z, False)
    assert torch.equal(run(z.flip(1), True), a.flip(1))
    assert not torch.equal(run(z.flip(1), False), a.flip(1))  # the same draws, not reversed: not a mirror


def test_time_reversal_is_the_fusion_with_the_motion_model_as_its_own_backward(dual):
    z, known, times = _window()
    sigmas = dual._sigmas(2)
    cond = {"times": times, "anchor": z[:, 0]}

    def direct(backward, rotate_maps):
        return sample_window_dual(dual.motion_denoiser, backward, z, known, sigmas, "euler_ancestral",
                                  torch.Generator().manual_seed(3), 1.5, cond, backward_anchor=z[:, -1],
                                  rotate_maps=rotate_maps)

    def via_pipe(strategy):
        return dual.sample_window(z, known, times, z[:, 0], torch.Generator().manual_seed(3), 2, "euler_ancestral",
                                  1.5, strategy=strategy)

    tr, bi = via_pipe("time-reversal"), via_pipe("bidirectional")
    # Without rotated maps, bidirectional with the backward stage = the motion model's own network is time-reversal.
    assert torch.equal(tr, direct(dual.motion_denoiser, False))
    assert torch.equal(tr, direct(dual.backward_denoiser, False))
    # Bidirectional feeds the backward model the forward pass's rotated temporal attention maps.
    assert torch.equal(bi, direct(dual.backward_denoiser, True))
    assert not torch.equal(bi, tr)


def test_noise_reinjection_runs_the_declared_steps(pipe):
    sigmas = get_sigmas_karras(6, 0.002, 80.0, dtype=torch.float32)
    assert reinjected_steps(sigmas, 0) == 0 and reinjected_steps(sigmas, 5) == 3
    assert reinjected_steps(sigmas, 5, 1.0) == 5  # never the step to sigma = 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="reinject"):
            reinjected_steps(sigmas, bad)
    calls = []

    def counted(x, sigma, **cond):
        calls.append(1)
        return pipe.motion_denoiser(x, sigma, **cond)

    z, known, times = _window()
    out = sample_window_dual(counted, counted, z, known, sigmas, "euler", torch.Generator().manual_seed(0), 1.0,
                             {"times": times, "anchor": z[:, 0]}, backward_anchor=z[:, -1], reinject=2)
    assert len(calls) == 2 * (6 + 2 * 3)  # two directions x (steps + reinject x re-injected steps)
    assert torch.equal(out[known], z[known])
    s, e = _frames(2)
    once = pipe.interpolate(s, e, num_frames=3, seed=0, strategy="time-reversal")
    assert not np.array_equal(once, pipe.interpolate(s, e, num_frames=3, seed=0, strategy="time-reversal", reinject=2))


def test_bad_strategies_are_one_line_errors(pipe, dual):
    s, e = _frames(2)
    with pytest.raises(ConfigError, match="no backward stage.*time-reversal") as err:
        pipe.interpolate(s, e, num_frames=3, strategy="bidirectional")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown interpolation strategy 'sideways'"):
        dual.interpolate_video(_frames(3), 2, strategy="sideways")
    with pytest.raises(ConfigError, match="reinject"):
        dual.interpolate(s, e, num_frames=3, strategy="time-reversal", reinject=-1)
    other = _randomise(type(pipe.motion)(dataclasses.replace(pipe.motion.config, temporal_levels=(1,))), 5)
    with pytest.raises(ConfigError, match="fine-tune of this motion model"):
        _with_backward(pipe, other).interpolate(s, e, num_frames=3, strategy="bidirectional")


def test_a_backward_model_trained_against_another_motion_model_is_refused(pipe):
    from vidm.models.pretrained import weights_fingerprint

    backward = copy.deepcopy(pipe.motion)
    backward.training_record = {"stage": "backward", "forward_model": "0123456789abcdef"}
    with pytest.raises(ConfigError, match="fine-tuned against another motion model.*time-reversal"):
        _with_backward(pipe, backward).check_strategy("bidirectional")
    backward.training_record["forward_model"] = weights_fingerprint(pipe.motion)
    assert _with_backward(pipe, backward).check_strategy("bidirectional") == "bidirectional"


# ---------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dirs(pipe, dual, tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    return pipe.save_pretrained(root / "plain"), dual.save_pretrained(root / "dual")


def test_cli_choices_are_the_strategies():
    from vidm.commands.eval import MODEL_METHODS as CLI_METHODS
    from vidm.commands.sample import STRATEGY_CHOICES
    from vidm.eval.interpolate_eval import MODEL_METHODS

    assert STRATEGY_CHOICES == STRATEGIES and CLI_METHODS == tuple(MODEL_METHODS)
    assert tuple(m.strategy for m in MODEL_METHODS.values() if not m.cascade) == STRATEGIES


def test_cli_interpolate_with_each_strategy(model_dirs, tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip

    _, dual_dir = model_dirs
    a, b = _png(tmp_path / "a.png", _frames(1)[0]), _png(tmp_path / "b.png", _frames(1, seed=1)[0])
    for strategy in ("bidirectional", "time-reversal"):
        out = tmp_path / f"{strategy}.mp4"
        assert main(["interpolate", a, b, "--frames", "3", "--strategy", strategy, "--reinject", "1",
                     "--model", str(dual_dir), "-o", str(out), "--quiet"]) == 0
        assert read_clip(out).shape[0] == 5


@pytest.mark.parametrize("case", ["unknown", "no_backward", "negative_reinject"])
def test_cli_bad_strategy_is_one_line_and_writes_nothing(model_dirs, tmp_path, capsys, case):
    from vidm.cli import main

    plain_dir, _ = model_dirs
    a, b = _png(tmp_path / "a.png", _frames(1)[0]), _png(tmp_path / "b.png", _frames(1, seed=1)[0])
    extra = {"unknown": ["--strategy", "sideways"], "no_backward": ["--strategy", "bidirectional"],
             "negative_reinject": ["--reinject", "-1"]}[case]
    out = tmp_path / "o.mp4"
    rc = main(["interpolate", a, b, "--frames", "3", *extra, "--model", str(plain_dir), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("vidm: error: ")
    assert {"unknown": "sideways", "no_backward": "time-reversal", "negative_reinject": "reinject"}[case] in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_eval_compares_the_strategies(model_dirs, tmp_path, capsys):
    from vidm.data.synth import generate_dataset

    plain_dir, dual_dir = model_dirs
    data = tmp_path / "data"
    generate_dataset(data, videos=2, frames=6, size=16, progress=False)
    out = tmp_path / "report"
    rc = eval_interpolate(dual_dir, data, out, "flow,model-time-reversal,model,model-bidirectional",
                          "--samples", "2", "--steps", "2", "--reinject", "1")
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["methods"] == ["model", "model_best_of_2", "model-bidirectional", "model-bidirectional_best_of_2",
                            "model-time-reversal", "model-time-reversal_best_of_2", "flow"]
    assert set(r["paired"]) == {"model - model-bidirectional", "model - model-time-reversal", "model - flow"}
    assert r["settings"]["reinject"] == 1
    assert "model-bidirectional best/2" in (out / "report.md").read_text()
    capsys.readouterr()
    bad = tmp_path / "bad"
    for methods, needle in (("model-bidirectional", "no backward stage"), ("model-sideways", "unknown")):
        rc = eval_interpolate(plain_dir, data, bad, methods, clips=1)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and needle in err[0], err
        assert not bad.exists()


def test_a_backward_stage_packs_and_loads(pipe, tmp_path):
    from vidm.cli import main

    for stage in ("autoencoder", "content", "motion"):
        getattr(pipe, stage).save_pretrained(tmp_path / stage / "model")
    rc = main(["pack", "--autoencoder", str(tmp_path / "autoencoder"), "--content", str(tmp_path / "content"),
               "--motion", str(tmp_path / "motion"), "--backward", str(tmp_path / "motion"), "--size", str(SIZE),
               "--window", "5", "--max-span", "8", "--sigma-data", "0.5", "-o", str(tmp_path / "packed")])
    assert rc == 0
    packed = VideoPipeline.from_pretrained(tmp_path / "packed", device="cpu", dtype="fp32")
    assert packed.has_stage("backward") and packed.check_strategy("bidirectional") == "bidirectional"
