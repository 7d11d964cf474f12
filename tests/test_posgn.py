"""Positional group normalisation (`model.modulation: positional`, vidm/models/positional.py):
the coordinates, the coordinate MLP's output layout, exact equivalence to an unmodulated block
when the MLP's last layer is zero (torch fallback and Triton interpreter), the motion model's
symmetries, and that a positional model trains, saves, loads, samples and runs through the
training loop (EMA export, run.init_from)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from vidm.diffusion import Denoiser
from vidm.diffusion.loss import edm_loss
from vidm.diffusion.samplers import get_sigmas_karras, sample_heun
from vidm.errors import ConfigError, ShapeError
from vidm.models import ContentUNet, ContentUNetConfig, MotionUNet, MotionUNetConfig, ResBlock
from vidm.models.positional import PositionalModulation, frame_coordinates
from kernel_helpers import use_kernels
from model_helpers import randomize_zero_init

SMALL = dict(model_channels=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), head_dim=16, norm_groups=4)


from model_helpers import one_thread  # noqa: F401  (autouse: one torch thread)


def motion(modulation="positional", **kw) -> MotionUNet:
    torch.manual_seed(0)
    return MotionUNet(MotionUNetConfig(**{"temporal_levels": (0, 1), "modulation": modulation, **SMALL, **kw})).eval()


def inputs(B=2, T=4, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 4, h, w, generator=g)
    c_noise = torch.randn(B, T, generator=g)
    known = torch.rand(B, T, generator=g) < 0.4
    times = torch.cumsum(torch.rand(B, T, generator=g) * 2 + 0.25, dim=1)
    return x, c_noise, known, times


def test_frame_coordinates():
    # noise: EDM's sigma range [0.002, 80] spans [-1, 1]; time: each window's [min, max] -> [-1, 1]
    c_noise = torch.log(torch.tensor([[0.002, 80.0, 1.0], [0.5, 0.5, 0.5]])) / 4
    times = torch.tensor([[3.0, 5.0, 4.0], [10.0, 10.0, 10.0]])  # second window: all at one time
    fc = frame_coordinates(c_noise, times)
    assert fc.shape == (6, 2) and fc.dtype == torch.float32
    torch.testing.assert_close(fc[:2, 0], torch.tensor([-1.0, 1.0]))
    assert -1 < fc[2, 0] < 1
    torch.testing.assert_close(fc[:3, 1], torch.tensor([-1.0, 1.0, 0.0]))
    assert torch.equal(fc[3:, 1], torch.zeros(3))
    # spacing, not index: doubling every time (or shifting it) changes nothing within a window
    assert torch.equal(frame_coordinates(c_noise, times * 2 + 7)[:, 1], fc[:, 1])
    content = frame_coordinates(torch.zeros(5))  # content model: time 0
    assert content.shape == (5, 2) and torch.equal(content[:, 1], torch.zeros(5))
    with pytest.raises(ShapeError, match="times"):
        frame_coordinates(c_noise, times[:, :2])


def test_modulation_layout_positions_and_zero_output():
    torch.manual_seed(0)
    mod = PositionalModulation(16, (8, 16))
    fc = frame_coordinates(torch.randn(3))
    (s1, b1), (s2, b2) = mod(fc, 5, 3)  # odd sizes
    assert s1.shape == b1.shape == (3, 8, 5, 3) and s2.shape == b2.shape == (3, 16, 5, 3)
    # NCHW slices of one tensor: spatial dims contiguous, as the feature maps they modulate
    assert s1.stride()[1:] == (15, 3, 1) and s2.stride()[1:] == (15, 3, 1)
    # it is the MLP of the (noise, time, y, x) vector at every pixel, written out plainly
    F = torch.nn.functional
    yy, xx = torch.meshgrid((torch.arange(5) + 0.5) / 5 * 2 - 1, (torch.arange(3) + 0.5) / 3 * 2 - 1, indexing="ij")
    coords = torch.cat([fc[:, None, None, :].expand(3, 5, 3, 2), torch.stack([yy, xx], -1).expand(3, 5, 3, 2)], -1)
    plain = mod.out(F.silu(mod.hidden(torch.sin(mod.embed(coords))))).permute(0, 3, 1, 2)  # (N, 48, H, W)
    torch.testing.assert_close(torch.cat([s1, b1, s2, b2], 1), plain, atol=1e-6, rtol=1e-5)
    assert (s2[:, :, 0, 0] - s2[:, :, 4, 2]).abs().max() > 1e-3  # depends on the position
    assert (s2[0] - s2[1]).abs().max() > 1e-3  # and on the frame's coordinates
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert mod(fc, 4, 4)[0][0].dtype == torch.bfloat16
    torch.nn.init.zeros_(mod.out.weight)
    torch.nn.init.zeros_(mod.out.bias)
    assert all(torch.equal(t, torch.zeros_like(t)) for pair in mod(fc, 5, 3) for t in pair)
    with pytest.raises(ShapeError, match=r"\(N, 2\)"):
        mod(torch.zeros(3, 4), 5, 3)


@pytest.mark.parametrize("provider", ["torch", "triton"])
def test_zero_last_layer_block_is_the_unmodulated_block(provider, monkeypatch):
    # The MLP's last layer at zero: scale = shift = 0 exactly, so the block is the plain
    # GroupNorm+SiLU block (no modulation at all), bit for bit: torch.equal, not allclose.
    use_kernels(monkeypatch, provider)  # triton: the interpreter on a CPU
    torch.manual_seed(0)
    pos = randomize_zero_init(ResBlock(8, 16, None, 4, modulation="positional"))  # conv2, norm biases not 0
    torch.nn.init.zeros_(pos.pos_mod.out.weight)
    torch.nn.init.zeros_(pos.pos_mod.out.bias)
    plain = ResBlock(8, 16, None, 4)  # the autoencoder's kind: norms without scale/shift
    plain.load_state_dict({k: v for k, v in pos.state_dict().items() if not k.startswith("pos_mod.")})
    x = torch.randn(3, 8, 7, 5)
    fc = frame_coordinates(torch.randn(3))
    with torch.no_grad():
        assert torch.equal(pos(x, fc), plain(x))
    # with grad (training) too, and the gradients reach the MLP's last layer
    xg = x.clone().requires_grad_()
    out = pos(xg, fc)
    assert torch.equal(out, plain(x))
    out.square().sum().backward()
    assert pos.pos_mod.out.weight.grad.abs().sum() > 0


def test_zero_last_layers_unet_is_the_embedding_unet_with_zero_projections():
    # Whole model: a positional motion UNet whose MLPs' last layers are zero computes exactly
    # what the embedding UNet with the same body weights computes once its embedding
    # projections are zero (both: every norm unmodulated).
    pos, emb = randomize_zero_init(motion()), randomize_zero_init(motion("embedding"))
    with torch.no_grad():
        for name, p in pos.named_parameters():
            if ".pos_mod.out." in name:
                p.zero_()
        for name, p in emb.named_parameters():
            if ".emb_proj." in name:
                p.zero_()
    res = emb.load_state_dict({k: v for k, v in pos.state_dict().items() if ".pos_mod." not in k}, strict=False)
    assert not res.unexpected_keys and all(k.startswith(("noise_embed", "known_embed")) or ".emb_proj." in k
                                           for k in res.missing_keys)
    x, c_noise, known, times = inputs()
    with torch.no_grad():
        assert torch.equal(pos(x, c_noise, known, times), emb(x, c_noise, known, times))


def test_motion_symmetries_and_inputs():
    net = randomize_zero_init(motion())
    assert net.noise_embed is None and net.known_embed is None  # no per-sample embedding
    assert not any("emb_proj" in n for n, _ in net.named_parameters())
    x, c_noise, known, times = inputs(T=5)
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        out = net(x, c_noise, known, times)
        out_p = net(x[:, perm], c_noise[:, perm], known[:, perm], times[:, perm])
        torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-4)
        assert (net(x, c_noise + 0.5, known, times) - out).abs().max() > 1e-3  # the noise level counts
        uneven = times.clone()
        uneven[:, 2] += 0.7
        assert (net(x, c_noise, known, uneven) - out).abs().max() > 1e-3  # and the frame times
        single = net(x[:, :1], c_noise[:, :1], known[:, :1], times[:, :1])  # any window length
        assert single.shape == x[:, :1].shape and torch.isfinite(single).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 scale/shift into the norms
            half = net(x, c_noise, known, times).float()
    assert (half - out).abs().max() < 0.1 * out.abs().max()


def test_content_model_and_config_errors():
    torch.manual_seed(0)
    net = randomize_zero_init(ContentUNet(ContentUNetConfig(modulation="positional", **SMALL))).eval()
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        out = net(x, torch.zeros(3))
        assert out.shape == x.shape and (net(x, torch.ones(3)) - out).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="class labels"):
        ContentUNetConfig(modulation="positional", num_classes=3)
    with pytest.raises(ConfigError, match="modulation: must be one of embedding, positional"):
        MotionUNetConfig(modulation="posgn")


def test_positional_model_trains_saves_loads_and_samples(tmp_path):
    net = motion().train()
    den = Denoiser(net)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 4, 8, 8, generator=g)
    known = torch.tensor([[True, False, False, True], [True, False, True, False]])
    times = torch.arange(4.0).expand(2, 4)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):  # one fixed batch, fixed noise: the loss must go down
        loss = edm_loss(den, x0, known, torch.Generator().manual_seed(1), times=times)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    trained = {n for n, p in net.named_parameters()
               if ".pos_mod." in n and p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.endswith("pos_mod.embed.weight") for n in trained)  # gradients reach the whole MLP

    net.eval().save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["modulation"] == "positional"
    loaded = MotionUNet.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == net.config
    x, c_noise, known_in, times_in = inputs(T=4)
    with torch.no_grad():
        assert torch.equal(loaded(x, c_noise, known_in, times_in), net(x, c_noise, known_in, times_in))

        # sample: known frames pass through exactly, the rest is finite
        sigmas = get_sigmas_karras(3)
        start = torch.where(known[:, :, None, None, None], x0, torch.randn(x0.shape, generator=g) * sigmas[0])
        frame_sigma = lambda s: torch.where(known, torch.zeros(()), s).to(torch.float32)  # noqa: E731
        out = sample_heun(lambda xt, s: Denoiser(loaded)(xt, frame_sigma(s), times=times), start, sigmas)
    assert out.shape == x0.shape and torch.isfinite(out).all()
    assert torch.equal(out[known], x0[known])


def test_training_loop_ema_export_and_init_from(tmp_path):
    # The real training stack (train.motion, in process): the EMA export holds the trained
    # positional MLPs; run.init_from continues from that folder's weights.
    from accelerate.state import AcceleratorState, GradientState

    from vidm.train.motion import main
    from vidm.data.latents import write_cache

    g = torch.Generator().manual_seed(0)
    write_cache(tmp_path / "cache", ((f"v{i}.mp4", torch.randn(6, 4, 8, 8, generator=g), {"fps": 8.0})
                                     for i in range(4)), {"autoencoder": None, "latent_scale": 1.0, "size": [32, 32]})
    (tmp_path / "motion.yaml").write_text(
        "stage: motion\n"
        "run: {name: run, steps: 3, mixed_precision: 'no', log_every: 1, sample_every: 3, val_every: 0,\n"
        "      checkpoint_every: 3, progress: false}\n"
        "optim: {lr: 2.0e-3, warmup_steps: 1}\nema: {decay: 0.5}\n"
        "model: {preset: null, model_channels: 16, ch_mult: [1, 2], num_res_blocks: 1, attn_levels: [1],\n"
        "        temporal_levels: [1], head_dim: 16, norm_groups: 4, modulation: positional}\n"
        "data: {num_frames: 3, stride: 1, batch_size: 2, val_clips: 1}\n"
        "diffusion: {sample_steps: 2, num_samples: 1}\n")

    def run(name, *extra):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        try:
            return main(["--config", str(tmp_path / "motion.yaml"), "--name", name,
                         f"run.output_dir={tmp_path / 'runs'}", f"data.latents={tmp_path / 'cache'}", *extra])
        finally:
            AcceleratorState._reset_state(True)
            GradientState._reset_state()

    assert run("pos") == 0
    folder = tmp_path / "runs" / "pos" / "model"
    rows = [json.loads(line) for line in (tmp_path / "runs" / "pos" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    exported = load_file(str(folder / "model.safetensors"))
    init = motion(temporal_levels=(1,))  # the run's own init (same config, seeded by run.seed = 0)
    assert MotionUNet.from_pretrained(folder).config == init.config
    fresh = init.state_dict()
    assert set(exported) == set(fresh) and any(".pos_mod." in k for k in exported)
    for part in ("embed", "hidden", "out"):  # the EMA export holds the trained MLP, every layer
        key = next(k for k in exported if k.endswith(f"pos_mod.{part}.weight"))
        assert (exported[key].float() - fresh[key]).abs().max() > 0, key
    # init_from that folder, one step at a negligible lr: the export equals the source
    assert run("tuned", f"run.init_from={folder}", "run.steps=1", "optim.lr=1e-12", "run.sample_every=0") == 0
    tuned = load_file(str(tmp_path / "runs" / "tuned" / "model" / "model.safetensors"))
    assert max((tuned[k].double() - v.double()).abs().max().item() for k, v in exported.items()) < 1e-9


def test_bench_shapes_come_from_the_base_motion_preset():
    # kernels.bench's per-position shapes are ResBlock norms the base motion preset really runs.
    from vidm.kernels.bench import GROUP_NORM_POS_SHAPES
    from vidm.gpucheck.shapes import PRESET_DATA, capture

    calls = [c for c in capture("base") if c["op"] == "group_norm" and c["model"] == "motion" and c["modulated"]]
    seen = {tuple(c["shape"][1:]) for c in calls}
    frames = PRESET_DATA["base"]["batch"]["motion"] * PRESET_DATA["base"]["num_frames"]
    for _, BT, C, H, W in GROUP_NORM_POS_SHAPES["full"]:
        assert (C, H, W) in seen and BT == frames


def test_bench_group_norm_pos_on_cpu():
    from vidm.kernels.bench import run

    report = run(preset="tiny", ops=("group_norm_pos",), device="cpu", log=lambda *_: None)
    rows = {r["provider"]: r for r in report["results"]}
    assert set(rows) == {"triton", "eager", "chain", "compiled"}
    assert "skipped" in rows["triton"] and "--compile" in rows["compiled"]["skipped"]
    for name in ("eager", "chain"):
        r = rows[name]
        assert r["op"] == "group_norm_pos" and r["rel_err_vs_fp32_torch"] < 1e-5
        assert r["fwd"]["ms"] > 0 and r["fwd+bwd"]["ms"] > 0 and r["fwd"]["peak_fraction"] > 0
        assert r["bytes_fwd"] == 4 * 2 * 64 * 8 * 8 * 4 and r["bytes_fwd_bwd"] == 11 / 4 * r["bytes_fwd"]
    assert rows["chain"]["fwd"]["speedup"] == 1.0  # the baseline of group_norm_pos
