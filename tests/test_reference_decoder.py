"""Reference-conditioned decoding: hand-set outputs, warping geometry, shapes, old folders,
bad input, and that a few training steps lower the loss."""

import json

import numpy as np
import pytest
import torch

from vidm.errors import ConfigError, ShapeError
from vidm.models.autoencoder import AutoencoderKL
from vidm.models.presets import get_preset
from vidm.models.warp import backward_warp, laplacian_pyramid, level_sizes


def ref_ae(seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(get_preset("autoencoder", "tiny").replace(references=2, ref_channels=16)).eval()


def hand_set(ae, logits=(100.0, -100.0, -100.0), flow0=(0.0, 0.0)):
    """Coarse head -> constant flow for slot 0 and constant blend logits; refinement stays zero."""
    head = ae.ref_decoder.coarse.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0], head.bias[1] = flow0
        head.bias[4:7] = torch.tensor(logits)
    ae.ref_decoder.refine.out.weight.data.zero_()
    ae.ref_decoder.refine.out.bias.data.zero_()


@pytest.mark.parametrize("scale", [1, 4])
def test_zero_flow_full_weight_returns_reference_exactly(scale):
    ae = ref_ae()
    hand_set(ae)
    S = 64 * scale
    refs = torch.rand(2, 2, 3, S, S) * 2 - 1
    with torch.no_grad():
        out = ae.decode(torch.randn(2, 4, 16, 16), refs, torch.tensor([[-1.0, 1.0]] * 2))
    assert torch.equal(out, refs[:, 0])


@pytest.mark.parametrize("scale", [1, 4])
def test_known_translation_moves_pattern_to_the_right_place(scale):
    ae = ref_ae()
    S = 64 * scale
    hand_set(ae, flow0=(4.0 / 64, -2.0 / 64))  # out[y, x] = ref[y - 2s, x + 4s] at scale s
    ref = torch.zeros(1, 1, 3, S, S)
    ref[..., 20 * scale:30 * scale, 30 * scale:40 * scale] = 1.0  # a bright square
    with torch.no_grad():
        out = ae.decode(torch.randn(1, 4, 16, 16), ref, torch.tensor([[-1.0]]))
    dx, dy = 4 * scale, -2 * scale
    expect = torch.zeros_like(ref[:, 0])
    expect[..., (20 * scale - dy):(30 * scale - dy), (30 * scale - dx):(40 * scale - dx)] = 1.0
    assert torch.equal(out, expect)


def test_backward_warp_is_exact_for_integer_shifts_and_bilinear_between():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    flow = torch.zeros(2, 2, 5, 7)
    flow[:, 0] = 1.0 / 7  # one pixel right
    out = backward_warp(img, flow)
    assert torch.equal(out[..., :-1], img[..., 1:])
    assert torch.equal(out[..., -1], img[..., -1])  # border
    flow[:, 0] = 0.5 / 7
    half = backward_warp(img, flow)
    assert torch.allclose(half[..., :-1], (img[..., 1:] + img[..., :-1]) / 2)


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (90, 160), (130, 70)])
@pytest.mark.parametrize("k", [1, 2])
def test_output_has_the_references_size(size, k):
    ae = ref_ae()
    refs = torch.rand(2, k, 3, *size) * 2 - 1
    with torch.no_grad():
        out = ae.decode(torch.randn(2, 4, 16, 16), refs, -torch.ones(2, k), latent_sigma=0.5)
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_no_reference_is_the_plain_decoder():
    ae = ref_ae()
    z = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        a = ae.decode(z)
        b = ae.decode(z, torch.zeros(3, 0, 3, 64, 64), torch.zeros(3, 0))
        c = ae.decoder(z)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b) and torch.equal(a, c)


def test_plain_folder_from_before_loads_and_decodes_bit_identically(tmp_path):
    torch.manual_seed(3)
    cfg = get_preset("autoencoder", "tiny")
    ae = AutoencoderKL(cfg).eval()
    assert ae.ref_decoder is None
    assert not any(k.startswith("ref_decoder") for k in ae.state_dict())
    ae.save_pretrained(tmp_path / "ae")
    meta = json.loads((tmp_path / "ae" / "config.json").read_text())
    for key in ("references", "ref_channels", "ref_corr_radius"):  # as written before they existed
        meta["config"].pop(key)
    (tmp_path / "ae" / "config.json").write_text(json.dumps(meta))
    back = AutoencoderKL.from_pretrained(tmp_path / "ae").eval()
    z = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(back.decode(z), ae.decode(z))


def test_reference_folder_round_trips(tmp_path):
    ae = ref_ae(1)
    ae.save_pretrained(tmp_path / "ae")
    back = AutoencoderKL.from_pretrained(tmp_path / "ae").eval()
    refs = torch.rand(1, 2, 3, 40, 56) * 2 - 1
    z = torch.randn(1, 4, 16, 16)
    off = torch.tensor([[-2.0, 3.0]])
    with torch.no_grad():
        assert torch.equal(back.decode(z, refs, off), ae.decode(z, refs, off))


def test_bad_input_is_a_clear_error():
    ae = ref_ae()
    z = torch.randn(1, 4, 16, 16)
    with pytest.raises(ShapeError, match="at most 2"):
        ae.decode(z, torch.zeros(1, 3, 3, 64, 64), torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="offsets"):
        ae.decode(z, torch.zeros(1, 2, 3, 64, 64), torch.zeros(1, 1))
    with pytest.raises(ShapeError, match="finite"):
        ae.decode(z, torch.full((1, 1, 3, 64, 64), float("nan")), torch.zeros(1, 1))
    with pytest.raises(ShapeError, match="finite"):  # was: NaN warp coordinates, an index error
        ae.decode(torch.full_like(z, float("nan")), torch.zeros(1, 1, 3, 64, 64), torch.zeros(1, 1))
    with pytest.raises(ShapeError, match="latent_sigma"):
        ae.decode(z, torch.zeros(1, 1, 3, 64, 64), torch.zeros(1, 1), latent_sigma=-1.0)
    plain = AutoencoderKL(get_preset("autoencoder", "tiny"))
    with pytest.raises(ConfigError, match="plain decoder"):
        plain.decode(z, torch.zeros(1, 1, 3, 64, 64), torch.zeros(1, 1))
    with pytest.raises(ConfigError, match="references"):
        get_preset("autoencoder", "tiny").replace(references=1)


def test_level_sizes_cover_every_octave_up_to_the_reference():
    assert level_sizes(64, 64, 64) == [(64, 64)]
    assert level_sizes(256, 256, 64) == [(64, 64), (128, 128), (256, 256)]
    assert level_sizes(360, 640, 64) == [(45, 80), (90, 160), (180, 320), (360, 640)]
    assert level_sizes(33, 47, 64) == [(33, 47)]


def test_laplacian_pyramid_sums_back_to_the_image():
    x = torch.rand(1, 3, 37, 50)
    bands = laplacian_pyramid(x, 3)
    rec = bands[-1]
    for b in reversed(bands[:-1]):
        rec = torch.nn.functional.interpolate(rec, size=b.shape[-2:], mode="bilinear", align_corners=False) + b
    assert torch.allclose(rec, x, atol=1e-5)


# ------------------------------------------------------------------ training


def _tiny_folder(root, videos=3, frames=12, size=64):
    from vidm.data.synth import render_video
    from vidm.video import write_video

    root.mkdir()
    for i in range(videos):
        out = render_video(0, i, num_frames=frames, size=size)
        arr = out[0] if isinstance(out, tuple) else out
        write_video(root / f"{i:03d}.mp4", arr, threads=1)
    (root / "notes.txt").write_text("not a video\n")
    return root


def _tiny_cfg(tmp_path, data, steps=2, extra=()):
    from vidm.train.config import AutoencoderTrainConfig, load_config

    overrides = [f"data.root={data}", "data.size=32", "data.batch_size=4", "references.scales=[1,2]",
                 "references.scale_probs=[0.5,0.5]", "model.references=2", "model.ref_channels=8",
                 f"run.output_dir={tmp_path / 'runs'}", "run.name=ref", f"run.steps={steps}",
                 "run.log_every=1", "run.val_every=0", "run.sample_every=0", "run.checkpoint_every=0",
                 "run.progress=false", "run.mixed_precision=no", *extra]
    return load_config(AutoencoderTrainConfig, None, overrides), overrides


def test_reference_examples_are_a_pure_function_of_the_key(tmp_path):
    from vidm.data.frame_bank import ExampleConfig, FrameBank, ReferenceExamples

    bank = FrameBank(_tiny_folder(tmp_path / "v"), max_short_side=64)
    assert len(bank) == 3 and bank.names == ["000.mp4", "001.mp4", "002.mp4"]
    ds = ReferenceExamples(bank, 32, ExampleConfig(scales=(1, 2), scale_probs=(0.5, 0.5)))
    a, b = ds[(1, 77)], ds[(1, 77)]
    assert all(torch.equal(a[k], b[k]) for k in ("frames", "offsets", "present")) and a["scale"] == b["scale"]
    seen = {int(ds[(0, s)]["present"].sum()) for s in range(60)}
    assert seen == {0, 1, 2}  # two-sided, one-sided and plain examples all occur
    for s in range(30):
        ex = ds[(2, s)]
        P = 32 * ex["scale"]
        assert ex["frames"].shape == (3, 3, 64, 64)
        assert float(ex["frames"][..., P:, :].abs().sum()) == 0  # only the top-left P x P is used
        k = int(ex["present"].sum())
        if k == 2 and ex["offsets"][0] * ex["offsets"][1] < 0:
            assert ex["offsets"].abs().max() <= 16  # two-sided: the target between its references


def test_a_few_steps_lower_the_reference_loss(tmp_path):
    from vidm.train.autoencoder import ReferenceStep
    from vidm.data.frame_bank import ExampleConfig, FrameBank, ReferenceExamples

    torch.manual_seed(0)
    bank = FrameBank(_tiny_folder(tmp_path / "v"), max_short_side=64)
    cfg, _ = _tiny_cfg(tmp_path, tmp_path / "v")
    ds = ReferenceExamples(bank, 32, ExampleConfig(scales=(1, 2), scale_probs=(0.5, 0.5), p_two=1.0,
                                                   p_one=0.0, p_none=0.0))
    ae = AutoencoderKL(get_preset("autoencoder", "tiny").replace(references=2, ref_channels=8))
    step = ReferenceStep(ae, cfg)

    def batch(seed):
        items = [ds[(i % 3, seed * 10 + i)] for i in range(6)]
        return {"frames": torch.stack([it["frames"] for it in items]), "scale": [it["scale"] for it in items],
                "offsets": torch.stack([it["offsets"] for it in items]),
                "present": torch.stack([it["present"] for it in items])}

    fixed = batch(999)

    def fixed_loss():
        with torch.no_grad():
            return float(step(fixed, torch.Generator().manual_seed(5))[0])

    before = fixed_loss()
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    for i in range(60):
        loss, logs = step(batch(i), torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.9 * before, (before, after)


def test_the_l2_weight_scores_the_built_frames_squared_error(tmp_path):
    from vidm.train.autoencoder import ReferenceStep
    from vidm.data.frame_bank import ExampleConfig, FrameBank, ReferenceExamples

    bank = FrameBank(_tiny_folder(tmp_path / "v"), max_short_side=64)
    ds = ReferenceExamples(bank, 32, ExampleConfig(scales=(1, 2), scale_probs=(0.5, 0.5), p_two=1.0,
                                                   p_one=0.0, p_none=0.0))
    items = [ds[(i % 3, i)] for i in range(6)]
    batch = {"frames": torch.stack([it["frames"] for it in items]), "scale": [it["scale"] for it in items],
             "offsets": torch.stack([it["offsets"] for it in items]),
             "present": torch.stack([it["present"] for it in items])}
    assert len(set(batch["scale"])) == 2  # both scales, so the per-scale shares are exercised
    ae = AutoencoderKL(get_preset("autoencoder", "tiny").replace(references=2, ref_channels=8))
    # a decoder that answers mid-grey: the loss must be the targets' own mean square, per scale
    ae.reference_forward = lambda z, refs, *a: (torch.zeros_like(refs[:, 0]), torch.zeros(len(z), 3, 1, 1))
    want = 0.0
    for m in (1, 2):
        sel = [i for i, s in enumerate(batch["scale"]) if s == m]
        P = 32 * m
        want += float(batch["frames"][sel, 0, :, :P, :P].square().mean()) * len(sel) / 6
    for l2 in (0.0, 1.0, 3.0):
        cfg, _ = _tiny_cfg(tmp_path, tmp_path / "v", extra=("loss.l1=0", "loss.laplacian=0", "loss.kl=0",
                                                             "loss.logit_l2=0", f"loss.l2={l2}"))
        loss, _ = ReferenceStep(ae, cfg)(batch, torch.Generator().manual_seed(0))
        assert float(loss.detach()) == pytest.approx(l2 * want, rel=1e-5, abs=1e-9)


def test_train_autoencoder_with_references_runs_and_exports(tmp_path):
    from vidm.train.autoencoder import main

    data = _tiny_folder(tmp_path / "v")
    _, overrides = _tiny_cfg(tmp_path, data, steps=3, extra=[f"data.val_root={data}"])
    assert main(["--config", "configs/autoencoder/real.yaml", *overrides]) == 0
    ae = AutoencoderKL.from_pretrained(tmp_path / "runs" / "ref" / "model")
    assert ae.config.references == 2 and ae.config.latent_scale != 1.0
    refs = torch.rand(1, 2, 3, 50, 70) * 2 - 1
    with torch.no_grad():
        out = ae.decode(torch.randn(1, 4, 8, 8), refs, torch.tensor([[-1.0, 1.0]]))
    assert out.shape == (1, 3, 50, 70)


def test_shot_bounds_find_cuts_and_examples_stay_inside_a_shot(tmp_path):
    from vidm.data.frame_bank import ExampleConfig, FrameBank, ReferenceExamples, shot_bounds

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (1, 24, 32, 3))
    b = rng.integers(0, 255, (1, 24, 32, 3))
    drift = np.arange(12).reshape(-1, 1, 1, 1)  # slow change within a shot: no cut
    video = np.concatenate([np.clip(a + drift, 0, 255), np.clip(b + drift, 0, 255)]).astype(np.uint8)
    assert shot_bounds(video).tolist() == [0, 12, 24]
    assert shot_bounds(video[:12]).tolist() == [0, 12]
    assert shot_bounds(video[:1]).tolist() == [0, 1]

    dark = rng.integers(0, 80, (12, 40, 40, 3))  # shot 1: every pixel < 80
    bright = rng.integers(175, 255, (12, 40, 40, 3))  # shot 2: every pixel > 175
    bank = FrameBank(_tiny_folder(tmp_path / "v", videos=1), max_short_side=64)
    bank.videos = [np.concatenate([dark, bright]).astype(np.uint8)]
    bank.shots = [shot_bounds(bank.videos[0])]
    assert bank.shots[0].tolist() == [0, 12, 24]
    ds = ReferenceExamples(bank, 32, ExampleConfig(scales=(1,), scale_probs=(1.0,), max_gap=16, p_anchor=1.0))
    sides = set()
    for seed in range(200):
        ex = ds[(0, seed)]
        k = int(ex["present"].sum())
        means = [float(ex["frames"][j, :, :32, :32].mean()) for j in range(1 + k)]  # in [-1, 1]
        side = {m > 0 for m in means}
        assert len(side) == 1, (seed, means)  # target and references from one shot
        sides |= side
        if k:
            assert ex["offsets"][:k].abs().max() <= 11
    assert sides == {False, True}  # both shots are drawn
