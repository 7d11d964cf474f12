"""VIDIM's cascade (issue 14 item 2) on tiny random models: the upsampler is the motion model
with a wider input and nothing else, its noise-augmentation level reaches the network (training
and sampling), the pipeline runs base then upsampler only when asked, packs and loads, the
trainer learns from paired caches, and bad input is one line."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model_helpers import eval_interpolate, one_thread, train_in_process  # noqa: F401  (one_thread: autouse, one torch thread)
from test_pipeline import SIZE, _frames, _png, _randomise, _tiny_pipeline
from vidm.data.latents import LatentCache, PairedLatentClips, write_cache
from vidm.diffusion.cascade import aug_sigma, low_res_condition, upsample_latents
from vidm.errors import CheckpointError, ConfigError, ShapeError
from vidm.models import MotionUNet
from vidm.models.presets import get_preset
from vidm.pipeline import VideoPipeline


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    torch.manual_seed(0)
    return _tiny_pipeline()


def _upsampler(pipe, seed: int = 5) -> MotionUNet:
    return _randomise(MotionUNet.upsampler_from(pipe.motion, 2), seed)


@pytest.fixture(scope="module")
def cascade(pipe) -> VideoPipeline:
    return VideoPipeline(pipe.autoencoder, pipe.content, pipe.motion, pipe.config, device="cpu", dtype="fp32",
                         stages={"upsampler": _upsampler(pipe)})


# ----------------------------------------------------------------------------- the model


def test_the_upsampler_has_no_conditioning_parameters_beyond_its_wider_input(pipe):
    for motion, up in ((pipe.motion, MotionUNet.upsampler_from(pipe.motion, 2)),
                       (MotionUNet(get_preset("motion", "tiny")), MotionUNet(get_preset("upsampler", "tiny")))):
        a, b = motion.state_dict(), up.state_dict()
        assert a.keys() == b.keys()
        differ = {k for k in a if a[k].shape != b[k].shape}
        assert differ == {"body.conv_in.weight"}
        C = motion.config.in_channels
        wa, wb = a["body.conv_in.weight"], b["body.conv_in.weight"]
        assert wb.shape[1] == wa.shape[1] + C + 1 and wb.shape[0] == wa.shape[0] and wb.shape[2:] == wa.shape[2:]


def test_an_upsampler_from_a_motion_model_first_computes_what_it_does(pipe):
    up = MotionUNet.upsampler_from(pipe.motion, 2)
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 5, 4, 8, 8, generator=g), torch.randn(2, 5, generator=g)
    known, times = torch.zeros(2, 5, dtype=torch.bool), torch.arange(5.0)[None].expand(2, 5)
    low = torch.randn(2, 5, 4, 8, 8, generator=g)
    with torch.no_grad():
        same = up(x, c, known, times, low_res=low, aug_level=torch.tensor([0.1, 0.4]))
        torch.testing.assert_close(same, pipe.motion(x, c, known, times), rtol=0, atol=1e-6)
        with pytest.raises(ShapeError, match="needs low_res"):
            up(x, c, known, times)
        with pytest.raises(ShapeError, match="low_res must be"):
            up(x, c, known, times, low_res=low[:, :, :, :4], aug_level=torch.tensor([0.1, 0.4]))
        with pytest.raises(ShapeError, match="upsampler's inputs"):
            pipe.motion(x, c, known, times, low_res=low, aug_level=torch.tensor([0.1, 0.4]))


def test_the_augmentation_level_reaches_the_network_as_an_input_plane(cascade):
    up = cascade.stages["upsampler"]
    seen = []
    hook = up.body.conv_in.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    try:
        s, e = _frames(2)
        cascade.interpolate(s, e, num_frames=3, seed=1, steps=2, cascade=True)
    finally:
        hook.remove()
    assert seen and all(bool((x[:, -1] == cascade.config.cascade_aug).all()) for x in seen)
    # ... and it changes what the network computes
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(1, 5, 4, 8, 8, generator=g), torch.randn(1, 5, generator=g)
    known, times, low = torch.zeros(1, 5, dtype=torch.bool), torch.arange(5.0)[None], torch.randn(1, 5, 4, 8, 8)
    with torch.no_grad():
        a = up(x, c, known, times, low_res=low, aug_level=torch.tensor([0.0]))
        b = up(x, c, known, times, low_res=low, aug_level=torch.tensor([0.4]))
    assert not torch.allclose(a, b)


def test_noise_conditioning_augmentation():
    assert float(aug_sigma(0.0, 0.5)) == 0.0 and math.isclose(float(aug_sigma(0.5, 0.5)), 0.5, rel_tol=1e-6)
    z = torch.randn(2, 3, 4, 4, 4)
    up = upsample_latents(z, 2)
    assert up.shape == (2, 3, 4, 8, 8)
    noise = torch.randn_like(up)
    clean = low_res_condition(z, 2, torch.tensor([0.0, 0.0]), 0.5, noise)
    assert torch.equal(clean, up)  # level 0: the upsampled video itself
    noisy = low_res_condition(z, 2, torch.tensor([0.0, 0.5]), 0.5, noise)
    assert torch.equal(noisy[0], up[0])
    torch.testing.assert_close(noisy[1], (up[1] + 0.5 * noise[1]) / math.sqrt(2))


# ----------------------------------------------------------------------------- the pipeline


def test_without_cascade_an_upsampler_stage_changes_nothing(pipe, cascade):
    s, e = _frames(2)
    plain = pipe.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral")
    assert np.array_equal(plain, cascade.interpolate(s, e, num_frames=3, seed=2, sampler="euler_ancestral"))
    clip = _frames(3, seed=4)
    assert np.array_equal(pipe.interpolate_video(clip, 2, seed=1), cascade.interpolate_video(clip, 2, seed=1))


def test_cascade_runs_the_upsampler_at_its_size_on_the_base_video(cascade, monkeypatch):
    s, e = _frames(2, h=20, w=28)  # any size: decoded at the end frames' size
    seen = {}
    up_denoiser = cascade.upsampler_denoiser

    def spy(x, sigma, **cond):
        seen.setdefault("x", x.shape)
        seen.setdefault("cond", cond)
        return up_denoiser(x, sigma, **cond)

    monkeypatch.setattr(cascade, "upsampler_denoiser", spy)
    out = cascade.interpolate(s, e, num_frames=3, seed=3, cascade=True)
    assert out.shape == (1, 3, 20, 28, 3)
    assert seen["x"] == (1, 5, 4, 8, 8)  # 2x the base latents (4x4 for 16x16 frames)
    assert seen["cond"]["low_res"].shape == (1, 5, 4, 8, 8) and seen["cond"]["aug_level"].shape == (1,)
    assert cascade.upsampler_size == 2 * SIZE
    monkeypatch.undo()
    again = cascade.interpolate(s, e, num_frames=3, seed=3, cascade=True)
    assert np.array_equal(out, again)  # seeded
    assert not np.array_equal(out, cascade.interpolate(s, e, num_frames=3, seed=3))
    batch = cascade.interpolate_batch(np.stack([s, e]), np.stack([e, s]), 3, seed=3, cascade=True)
    assert batch.shape == (2, 1, 3, 20, 28, 3)
    video = cascade.interpolate_video(_frames(3, seed=2), 2, seed=0, cascade=True)
    assert video.shape == (1, 5, SIZE, SIZE, 3) and np.array_equal(video[0, ::2], _frames(3, seed=2))


def test_a_motion_model_as_upsampler_is_refused(pipe):
    with pytest.raises(CheckpointError, match="plain motion model"):
        VideoPipeline(pipe.autoencoder, pipe.content, pipe.motion, pipe.config, device="cpu",
                      stages={"upsampler": copy.deepcopy(pipe.motion)})
    with pytest.raises(ConfigError, match="no upsampler stage"):
        pipe.interpolate(*_frames(2), num_frames=3, cascade=True)
    with pytest.raises(ConfigError, match="cascade_aug"):
        dataclasses.replace(pipe.config, cascade_aug=1.0).validate()


def test_an_upsampler_stage_saves_and_loads(cascade, tmp_path):
    folder = cascade.save_pretrained(tmp_path / "p", weights_dtype=None)
    assert (folder / "upsampler" / "config.json").is_file()
    back = VideoPipeline.from_pretrained(folder, device="cpu", dtype="fp32")
    assert back.has_stage("upsampler") and back.stages["upsampler"].config.low_res_scale == 2
    s, e = _frames(2)
    assert np.array_equal(back.interpolate(s, e, num_frames=3, seed=0, cascade=True),
                          cascade.interpolate(s, e, num_frames=3, seed=0, cascade=True))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def model_dirs(pipe, cascade, tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    return pipe.save_pretrained(root / "plain"), cascade.save_pretrained(root / "cascade")


def test_cli_interpolate_cascade(model_dirs, tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip

    _, cascade_dir = model_dirs
    a, b = _png(tmp_path / "a.png", _frames(1)[0]), _png(tmp_path / "b.png", _frames(1, seed=1)[0])
    out = tmp_path / "c.mp4"
    assert main(["interpolate", a, b, "--frames", "3", "--cascade", "--model", str(cascade_dir), "-o", str(out),
                 "--quiet"]) == 0
    assert read_clip(out).shape[0] == 5


def test_cli_cascade_without_an_upsampler_is_one_line_and_writes_nothing(model_dirs, tmp_path, capsys):
    from vidm.cli import main

    plain_dir, _ = model_dirs
    a, b = _png(tmp_path / "a.png", _frames(1)[0]), _png(tmp_path / "b.png", _frames(1, seed=1)[0])
    rc = main(["interpolate", a, b, "--frames", "3", "--cascade", "--model", str(plain_dir), "-o",
               str(tmp_path / "o.mp4"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no upsampler stage" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_eval_scores_the_cascade(model_dirs, tmp_path, capsys):
    from vidm.data.synth import generate_dataset

    plain_dir, cascade_dir = model_dirs
    data = tmp_path / "data"
    generate_dataset(data, videos=2, frames=6, size=32, progress=False)
    out = tmp_path / "report"
    assert eval_interpolate(cascade_dir, data, out, "model,model-cascade", "--steps", "2") == 0
    r = json.loads((out / "report.json").read_text())
    assert r["methods"] == ["model", "model-cascade"] and "model - model-cascade" in r["paired"]
    capsys.readouterr()
    rc = eval_interpolate(plain_dir, data, tmp_path / "bad", "model-cascade", clips=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no upsampler stage" in err[0] and not (tmp_path / "bad").exists()


def _save_stages(pipe, root, up=None):
    for stage in ("autoencoder", "content", "motion"):
        getattr(pipe, stage).save_pretrained(root / stage / "model")
    if up is not None:
        up.save_pretrained(root / "upsampler" / "model", training={"stage": "upsampler", "sigma_data": 0.5,
                                                                   "size": 2 * SIZE, "window": 5, "max_span": 8.0,
                                                                   "frame_step": 1.0})


def _pack(root, *extra):
    from vidm.cli import main

    return main(["pack", "--autoencoder", str(root / "autoencoder"), "--content", str(root / "content"),
                 "--motion", str(root / "motion"), "--size", str(SIZE), "--window", "5", "--max-span", "8",
                 "--sigma-data", "0.5", "-o", str(root / "packed"), *extra])


def test_pack_takes_an_upsampler(pipe, tmp_path):
    _save_stages(pipe, tmp_path, _upsampler(pipe))
    assert _pack(tmp_path, "--upsampler", str(tmp_path / "upsampler"), "--cascade-aug", "0.2") == 0
    packed = VideoPipeline.from_pretrained(tmp_path / "packed", device="cpu", dtype="fp32")
    assert packed.has_stage("upsampler") and packed.config.cascade_aug == 0.2 and packed.check_cascade(True)


@pytest.mark.parametrize("case, needle", [
    ("motion", "plain motion model"),
    ("size", "trained at frame size 48"),
    ("window", "upsampler model was trained with window 7"),
    ("aug", "--cascade-aug"),
])
def test_pack_bad_upsampler_is_one_line(pipe, tmp_path, capsys, case, needle):
    up = _upsampler(pipe)
    _save_stages(pipe, tmp_path, up)
    rec = {"stage": "upsampler", "sigma_data": 0.5, "size": 2 * SIZE, "window": 5, "max_span": 8.0, "frame_step": 1.0}
    extra = []
    if case == "motion":
        pipe.motion.save_pretrained(tmp_path / "upsampler" / "model", training=rec)
    elif case == "size":
        up.save_pretrained(tmp_path / "upsampler" / "model", training={**rec, "size": 48})
    elif case == "window":
        up.save_pretrained(tmp_path / "upsampler" / "model", training={**rec, "window": 7})
    else:
        extra = ["--cascade-aug", "1.5"]
    capsys.readouterr()
    rc = _pack(tmp_path, "--upsampler", str(tmp_path / "upsampler"), *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and needle in err[0] and not (tmp_path / "packed").exists()


# ----------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def caches(tmp_path_factory, pipe):
    """Two caches of the same 6 videos of 10 frames: 4x8x8 latents and 4x4x4 ones (their 2x2
    means), and a motion model to start from."""
    root = tmp_path_factory.mktemp("upsampler")
    g = torch.Generator().manual_seed(0)
    videos = []
    for i in range(6):
        base, drift = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
        videos.append(base + 0.2 * torch.arange(10.0).view(10, 1, 1, 1) * drift)
    meta = {"autoencoder": None, "latent_scale": 1.0}
    write_cache(root / "hi", ((f"v{i}.mp4", v, {"fps": 8.0}) for i, v in enumerate(videos)), {**meta, "size": [32, 32]})
    write_cache(root / "lo", ((f"v{i}.mp4", torch.nn.functional.avg_pool2d(v, 2), {"fps": 8.0})
                              for i, v in enumerate(videos)), {**meta, "size": [16, 16]})
    write_cache(root / "other", ((f"w{i}.mp4", torch.nn.functional.avg_pool2d(v, 2), {"fps": 8.0})
                                 for i, v in enumerate(videos)), {**meta, "size": [16, 16]})
    pipe.motion.save_pretrained(root / "motion")
    return root


UNET = ["model.preset=null", "model.model_channels=16", "model.ch_mult=[1, 1]", "model.num_res_blocks=1",
        "model.attn_levels=[1]", "model.head_dim=16", "model.norm_groups=4", "model.temporal_levels=[0, 1]",
        "model.low_res_scale=2"]


def overrides(caches, *extra) -> list[str]:
    return [f"data.latents={caches / 'hi'}", f"data.low_latents={caches / 'lo'}", "data.num_frames=5",
            "data.stride=[1, 2]", "data.batch_size=2", "data.val_clips=2", "data.autoencoder=null",
            "run.mixed_precision=no", "run.progress=false", "diffusion.sample_steps=2", "diffusion.num_samples=2",
            *UNET, *extra]


def make_stage(caches, *extra):
    from vidm.train.config import UpsamplerTrainConfig, load_config
    from vidm.train.upsampler import UpsamplerStage

    cfg = load_config(UpsamplerTrainConfig, None, overrides(caches, *extra))
    acc = SimpleNamespace(device=torch.device("cpu"), is_main_process=True, autocast=nullcontext)
    stage = UpsamplerStage(cfg, acc, "test.yaml")
    stage.setup()
    return stage


def test_paired_windows_are_the_same_frames(caches):
    hi, lo = LatentCache(caches / "hi"), LatentCache(caches / "lo")
    clips = PairedLatentClips(hi, lo, [0, 1, 2], 5, (1, 2))
    for key in ((0, 3), (2, 11)):
        item = clips[key]
        assert item["latents"].shape == (5, 4, 8, 8) and item["low"].shape == (5, 4, 4, 4)
        torch.testing.assert_close(torch.nn.functional.avg_pool2d(item["latents"], 2), item["low"])
    with pytest.raises(ConfigError, match="do not hold the same videos"):
        PairedLatentClips(hi, LatentCache(caches / "other"), [0], 5)


def test_training_draws_the_level_from_u0_aug_max_and_the_network_sees_it(caches):
    stage = make_stage(caches, "cascade.aug_max=0.3")
    seen = []
    hook = stage.net.body.conv_in.register_forward_hook(lambda m, args, out: seen.append(args[0][:, -1].clone()))
    batch = stage.collate([stage.train_set[(i, 5 + i)] for i in range(2)])
    levels = []
    for k in range(20):
        cond = stage.condition(batch, 2, torch.Generator().manual_seed(k))
        levels += cond["aug_level"].tolist()
    assert all(0 <= v < 0.3 for v in levels) and max(levels) - min(levels) > 0.1
    loss, _ = stage.loss(stage.wrap(stage.net), batch, torch.Generator().manual_seed(0))
    hook.remove()
    assert torch.isfinite(loss) and seen
    plane = seen[0].reshape(2, -1)  # (B*T, h, w) -> per window: one value everywhere
    assert all(len(set(row.tolist())) == 1 and 0 <= row[0] < 0.3 for row in plane)


def in_process(argv) -> int:
    from vidm.train.upsampler import main

    return train_in_process(main, argv)


def test_a_few_steps_lower_the_loss_and_export_an_upsampler(caches):
    from vidm.serialization import read_json

    runs = caches / "runs"
    argv = ["--config", "configs/upsampler/tiny.yaml", "--name", "up", f"run.output_dir={runs}", "run.steps=30",
            "run.log_every=1", "run.sample_every=30", "run.val_every=0", "run.checkpoint_every=0", "optim.lr=2e-3",
            "optim.warmup_steps=1", "ema.decay=0.5", f"cascade.init_from_motion={caches / 'motion'}",
            *overrides(caches)]
    assert in_process(argv) == 0
    rows = [json.loads(line) for line in (runs / "up" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30 and np.mean(losses[-10:]) < np.mean(losses[:10])
    up = MotionUNet.from_pretrained(runs / "up" / "model")
    assert up.config.low_res_scale == 2
    rec = read_json(runs / "up" / "model" / "config.json")["training"]
    assert rec["stage"] == "upsampler" and rec["size"] == 32 and rec["base_size"] == 16 and rec["window"] == 5
    assert list((runs / "up" / "samples").glob("step-0000030-*"))


@pytest.mark.parametrize("extra, needle", [
    (["data.low_latents=null"], "two latent caches"),
    (["data.low_latents={caches}/other"], "do not hold the same videos"),
    (["data.low_latents={caches}/hi"], "needs 4x4x4"),
    (["cascade.aug_max=1.0"], "cascade.aug_max must be"),
    (["model.low_res_scale=0"], "model.low_res_scale must be >= 2"),
    (["model.low_res_scale=1"], "low_res_scale"),
    (["cascade.init_from_motion={caches}/hi"], "cascade.init_from_motion"),
    (["model.model_channels=32", "cascade.init_from_motion={caches}/motion"], "model_channels"),
])
def test_bad_config_is_a_one_line_error(caches, capsys, extra, needle):
    argv = ["--config", "configs/upsampler/tiny.yaml", "--name", "bad", f"run.output_dir={caches / 'bad-runs'}",
            *overrides(caches), *[e.format(caches=caches) for e in extra]]
    capsys.readouterr()
    assert in_process(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err and needle in err[-1], err
    assert not (caches / "bad-runs" / "bad" / "model").exists()
