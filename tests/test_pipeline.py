"""VideoPipeline and the sampling CLI on small randomly initialised models (no training):
shapes, window plans, determinism, exact pass-through of given frames, folders, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidm.errors import CheckpointError, ConfigError, ShapeError
from vidm.models import AutoencoderConfig, AutoencoderKL, ContentUNet, ContentUNetConfig, MotionUNet, MotionUNetConfig
from vidm.pipeline import PipelineConfig, VideoPipeline
from vidm.pipeline import plan

SIZE = 16  # frames 16x16 -> latents 4x4


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    # Zero-initialised output layers make an untrained model a constant map; give every
    # parameter a small random value so outputs depend on inputs and noise.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
    return model


def _tiny_pipeline(window: int = 5, **kw) -> VideoPipeline:
    ae = AutoencoderKL(AutoencoderConfig(downsample_factor=4, base_channels=16, ch_mult=(1, 1, 1), num_res_blocks=1,
                                         norm_groups=4, head_dim=16))
    unet = dict(model_channels=16, ch_mult=(1, 1), num_res_blocks=1, attn_levels=(1,), head_dim=16, norm_groups=4)
    content = ContentUNet(ContentUNetConfig(**unet))
    motion = MotionUNet(MotionUNetConfig(temporal_levels=(0, 1), **unet))
    for i, m in enumerate((ae, content, motion)):
        _randomise(m, i)
    cfg = PipelineConfig(size=SIZE, window=window, context=2, steps=2, max_span=8.0, **kw)
    return VideoPipeline(ae, content, motion, cfg, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    torch.manual_seed(0)
    return _tiny_pipeline()


def _frames(n: int, h: int = SIZE, w: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- plans


@pytest.mark.parametrize("n_total,window", [(3, 3), (9, 9), (10, 9), (66, 9), (17, 5), (100, 4)])
def test_plan_infill_fills_every_frame_once_from_both_sides(n_total, window):
    windows = plan.plan_infill(n_total, window)
    made = {0, n_total - 1}
    for w in windows:
        assert len(w) <= window and w == sorted(w)
        assert w[0] in made and w[-1] in made  # bracketed by made frames: true interpolation
        new = [p for p in w if p not in made]
        assert new, "a window that makes nothing"
        made.update(new)
    assert made == set(range(n_total))


def test_plan_continuation_and_upsample_cover_everything():
    for given, total, window, ctx in [(1, 32, 9, 4), (3, 4, 5, 2), (2, 20, 4, 3)]:
        made = set(range(given))
        for w in plan.plan_continuation(given, total, window, ctx):
            assert len(w) <= window and w[0] in made
            made.update(w)
        assert made == set(range(total))
    for n_in, factor, window in [(5, 4, 9), (3, 10, 9), (6, 2, 9), (4, 3, 4)]:
        n_out, windows = plan.plan_upsample(n_in, factor, window)
        assert n_out == (n_in - 1) * factor + 1
        made = set(range(0, n_out, factor))
        for w in windows:
            assert len(w) <= window
            made.update(w)
        assert made == set(range(n_out))


def test_window_times_compress_long_spans():
    assert plan.window_times([4, 5, 6], 1.0, 16.0) == [0.0, 1.0, 2.0]
    t = plan.window_times([0, 8, 16, 24, 32], 1.0, 8.0)
    assert t[0] == 0.0 and t[-1] == pytest.approx(8.0)
    assert np.allclose(np.diff(t), 2.0)


# ---------------------------------------------------------------------- pipeline


def test_generate_shapes_and_seeds(pipe):
    a = pipe.generate(num_frames=6, num_videos=2, seed=0)
    assert a.shape == (2, 6, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe.generate(num_frames=6, num_videos=2, seed=0))
    assert not np.array_equal(a, pipe.generate(num_frames=6, num_videos=2, seed=1))
    assert not np.array_equal(a[0], a[1])  # the videos of one batch differ


def test_interpolate_shapes_samples_and_resizing(pipe):
    s, e = _frames(2, 24, 40)
    mids = pipe.interpolate(s, e, num_frames=3, samples=2, seed=3)
    assert mids.shape == (2, 3, 24, 40, 3)  # back at the input size
    assert not np.array_equal(mids[0], mids[1])  # two different answers
    assert np.array_equal(mids, pipe.interpolate(s, e, num_frames=3, samples=2, seed=3))
    # more in-betweens than one window holds: hierarchical
    long = pipe.interpolate(s, e, num_frames=9, seed=0)
    assert long.shape == (1, 9, 24, 40, 3)


def test_interpolate_video_keeps_given_frames(pipe):
    frames = _frames(3)
    out = pipe.interpolate_video(frames, factor=3, seed=0)
    assert out.shape == (1, 7, SIZE, SIZE, 3)
    assert np.array_equal(out[0, ::3], frames)


def test_known_latents_pass_through_the_motion_window(pipe):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 4, 4, 4)
    known = torch.tensor([[True, False, False, False, True]] * 2)
    times = torch.arange(5.0).expand(2, -1)
    for sampler in ("euler", "heun", "dpmpp_2m", "euler_ancestral"):
        out = pipe.sample_window(z, known, times, z[:, 0], g, 2, sampler, guidance=2.0)
        assert torch.equal(out[known], z[known]), sampler
        assert not torch.equal(out[~known], z[~known])


def test_predict_shapes(pipe):
    out = pipe.predict(_frames(3), num_future=6, seed=0)
    assert out.shape == (1, 6, SIZE, SIZE, 3)


def test_bad_arguments_raise(pipe):
    s, e = _frames(2)
    with pytest.raises(ConfigError):
        pipe.interpolate(s, e, num_frames=0)
    with pytest.raises(ConfigError):
        pipe.generate(num_frames=-1)
    with pytest.raises(ShapeError):
        pipe.interpolate(s, _frames(1, 8, 8)[0], num_frames=3)
    with pytest.raises(ConfigError):
        pipe.interpolate(s, e, num_frames=2, sampler="nope")


def test_save_load_round_trip_and_missing_stage(pipe, tmp_path):
    d = pipe.save_pretrained(tmp_path / "p", weights_dtype=None)
    again = VideoPipeline.from_pretrained(d, device="cpu", dtype="fp32")
    assert np.array_equal(pipe.generate(num_frames=3, seed=5), again.generate(num_frames=3, seed=5))
    import shutil

    shutil.rmtree(d / "motion")
    with pytest.raises(CheckpointError, match="motion"):
        VideoPipeline.from_pretrained(d)
    with pytest.raises(CheckpointError):
        VideoPipeline.from_pretrained(tmp_path / "nothing")


def test_infill_start_splat_or_noise():
    pipe = _tiny_pipeline(infill_init="splat")
    s, e = _frames(2)
    clip = _frames(3, seed=2)
    a = pipe.interpolate(s, e, num_frames=3, seed=0)
    assert np.array_equal(a, pipe.interpolate(s, e, num_frames=3, seed=0))  # still deterministic
    g, p = pipe.generate(num_frames=6, seed=1), pipe.predict(clip, 3, seed=1)
    pipe.set_infill("noise")
    assert not np.array_equal(a, pipe.interpolate(s, e, num_frames=3, seed=0))
    # generation and prediction have nothing to interpolate between: the setting changes nothing
    assert np.array_equal(g, pipe.generate(num_frames=6, seed=1))
    assert np.array_equal(p, pipe.predict(clip, 3, seed=1))


def test_sample_window_starts_at_init_when_given():
    pipe = _tiny_pipeline()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 4, 4, 4)
    known = torch.tensor([[True, False, False, False, True]] * 2)
    times = torch.arange(5.0).expand(2, -1)
    init = torch.randn(2, 5, 4, 4, 4)
    near = pipe.sample_window(z, known, times, z[:, 0], g, 2, "euler", 1.0, init=init, init_sigma=0.01)
    assert torch.equal(near[known], z[known])
    assert (near[~known] - init[~known]).abs().max() < 0.05  # a little noise, a little denoising
    far = pipe.sample_window(z, known, times, z[:, 0], g, 2, "euler", 1.0)  # from sigma_max
    assert (far[~known] - init[~known]).abs().max() > 0.5


def test_infill_settings_are_checked():
    pipe = _tiny_pipeline()
    with pytest.raises(ConfigError, match="infill_init"):
        pipe.set_infill("blur")
    with pytest.raises(ConfigError, match="infill_sigma"):
        pipe.set_infill(sigma=0.0)
    assert (pipe.config.infill_init, pipe.config.infill_sigma) == ("splat", 0.5)  # unchanged
    pipe.set_infill("noise", 2.0)
    assert (pipe.config.infill_init, pipe.config.infill_sigma) == ("noise", 2.0)
    old = {k: v for k, v in PipelineConfig().to_dict().items() if not k.startswith("infill")}
    assert PipelineConfig.from_dict(old).infill_init == "splat"  # folders from before the setting
    with pytest.raises(ConfigError, match="infill_init"):
        PipelineConfig.from_dict({**old, "infill_init": "nope"})


# ---------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("m") / "pipe")


def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return str(path)


def test_cli_interpolate_writes_video_and_strip(model_dir, tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip

    a, b = _frames(2, 20, 28)
    out, strip = tmp_path / "o.mp4", tmp_path / "s.png"
    rc = main(["interpolate", _png(tmp_path / "a.png", a), _png(tmp_path / "b.png", b), "--frames", "3",
               "--model", str(model_dir), "-o", str(out), "--strip", str(strip), "--quiet"])
    assert rc == 0 and strip.is_file()
    video = read_clip(out)
    assert video.shape[0] == 5 and video.shape[1:3] == (20, 28)
    plain = tmp_path / "plain.mp4"
    rc = main(["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--frames", "3", "--init", "noise",
               "--model", str(model_dir), "-o", str(plain), "--quiet"])
    assert rc == 0 and not np.array_equal(read_clip(plain)[1:4], video[1:4])


def test_cli_pack_builds_a_loadable_pipeline(pipe, tmp_path):
    from vidm.cli import main

    for stage in ("autoencoder", "content", "motion"):
        getattr(pipe, stage).save_pretrained(tmp_path / stage / "model")
    rc = main(["pack", "--autoencoder", str(tmp_path / "autoencoder"), "--content", str(tmp_path / "content"),
               "--motion", str(tmp_path / "motion" / "model"), "--size", str(SIZE), "--window", "5",
               "--max-span", "8", "--sigma-data", "0.5", "--decode-latent-sigma", "0.75",
               "-o", str(tmp_path / "packed")])
    assert rc == 0
    packed = VideoPipeline.from_pretrained(tmp_path / "packed", device="cpu", dtype="fp32")
    assert packed.config.window == 5 and packed.config.context == 2
    assert packed.config.decode_latent_sigma == 0.75


@pytest.mark.parametrize("case", ["missing_image", "sizes_differ", "zero_frames", "missing_out_dir",
                                  "bad_sampler", "bad_suffix", "bad_init_sigma"])
def test_cli_bad_input_is_one_line_and_leaves_nothing(model_dir, tmp_path, capsys, case):
    from vidm.cli import main

    a = _png(tmp_path / "a.png", _frames(1, 20, 28)[0])
    b = _png(tmp_path / "b.png", _frames(1, 20, 28, seed=1)[0])
    out = tmp_path / "o.mp4"
    args = {"missing_image": [a, str(tmp_path / "nope.png")],
            "sizes_differ": [a, _png(tmp_path / "c.png", _frames(1, 16, 16)[0])],
            "zero_frames": [a, b, "--frames", "0"],
            "missing_out_dir": [a, b],
            "bad_sampler": [a, b, "--sampler", "nope"],
            "bad_suffix": [a, b],
            "bad_init_sigma": [a, b, "--init-sigma", "-1"]}[case]
    if case == "missing_out_dir":
        out = tmp_path / "no" / "o.mp4"
    if case == "bad_suffix":
        out = tmp_path / "o.txt"
    rc = main(["interpolate", *args, "--model", str(model_dir), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("vidm: error: ")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix not in (".png",)] == []


def test_damaged_json_is_a_one_line_checkpoint_error(pipe, tmp_path):
    from vidm.models import load_pretrained

    d = pipe.save_pretrained(tmp_path / "p")
    (d / "pipeline.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"pipeline.json: not valid JSON"):
        VideoPipeline.from_pretrained(d)
    (d / "motion" / "config.json").write_text("[1, 2")
    for load in (load_pretrained, MotionUNet.from_pretrained):
        with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
            load(d / "motion")
