"""The backward-motion fine-tune (Generative Inbetweening, Wang et al. 2024): explicit temporal
attention maps in the motion UNet (record / replace / rotate, default path unchanged) and
train/backward.py (what the two models see, which weights train, export, bad configs)."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file

from vidm import kernels
from vidm.data.latents import write_cache
from vidm.errors import ConfigError, ShapeError
from vidm.models import MotionUNet, MotionUNetConfig, TemporalAttention, TemporalMaps
from vidm.models.temporal_maps import rotate_maps
from model_helpers import randomize_zero_init, train_in_process

C, T = 4, 5
SMALL = dict(model_channels=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), temporal_levels=(0, 1),
             head_dim=16, norm_groups=4)


from model_helpers import one_thread  # noqa: F401  (autouse: one torch thread)


def small_motion(**kw) -> MotionUNet:
    torch.manual_seed(0)
    return randomize_zero_init(MotionUNet(MotionUNetConfig(**{**SMALL, **kw})).eval())


def inputs(B: int = 2, T: int = T, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, 8, 8, generator=g)
    c_noise = torch.randn(B, T, generator=g)
    known = torch.zeros(B, T, dtype=torch.bool)
    known[:, 0] = True
    times = torch.cumsum(torch.rand(B, T, generator=g) + 0.5, dim=1)
    anchor = torch.randn(B, C, 8, 8, generator=g)
    return x, c_noise, known, times, anchor


def temporal_keys(net) -> list[str]:
    return [n.removeprefix("body.") for n, m in net.named_modules() if isinstance(m, TemporalAttention)]


# ----------------------------------------------------------------------------- the model side


def test_default_path_is_the_fused_kernel_bit_for_bit():
    """Without maps a temporal layer computes what it always did: the fused kernel on q, k, v
    (written out here as before the maps existed), bit for bit; temporal_maps=None is the default."""
    net = small_motion()
    layer = next(m for m in net.modules() if isinstance(m, TemporalAttention))
    g = torch.Generator().manual_seed(3)
    x, times = torch.randn(2 * T, 16, 8, 8, generator=g), torch.arange(T, dtype=torch.float32)[None].expand(2, T)
    with torch.no_grad():
        tokens = rearrange(layer.norm(x), "(b t) c h w -> b (h w) t c", b=2)
        tokens = tokens + layer.time_enc(times).to(tokens.dtype)[:, None]
        q, k, v = (rearrange(p(tokens), "b l t (heads d) -> (b l) heads t d", heads=layer.heads)
                   for p in (layer.to_q, layer.to_k, layer.to_v))
        out = layer.to_out(rearrange(kernels.attention(q, k, v), "(b l) heads t d -> b l t (heads d)", b=2))
        expect = x + rearrange(out, "b (h w) t c -> (b t) c h w", h=8, w=8)
        assert torch.equal(layer(x, times), expect)
        x5, c_noise, known, times5, anchor = inputs()
        assert torch.equal(net(x5, c_noise, known, times5, anchor),
                           net(x5, c_noise, known, times5, anchor, temporal_maps=None))


def test_recorded_maps_are_each_layers_softmax_and_keep_the_output():
    net = small_motion()
    x, c_noise, known, times, anchor = inputs()
    rec = TemporalMaps.record()
    with torch.no_grad():
        base = net(x, c_noise, known, times, anchor)
        out = net(x, c_noise, known, times, anchor, temporal_maps=rec)
    torch.testing.assert_close(out, base, atol=1e-5, rtol=1e-4)
    keys = temporal_keys(net)
    assert sorted(rec.maps) == sorted(keys) and len(keys) == 7  # 2 down stages, mid, 4 up stages
    # (B*h*w, heads, T, T) at each layer's own resolution: 8x8 at level 0 (1 head), 4x4 at level 1 (2 heads)
    assert rec.maps["down.0.1"].shape == (2 * 64, 1, T, T) and rec.maps["mid.2"].shape == (2 * 16, 2, T, T)
    for m in rec.maps.values():
        assert m.dtype == torch.float32 and bool((m >= 0).all())
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))
    # They are softmax(q k^T / sqrt(d)) of the layer's q and k (captured by a processor).
    seen = {}
    layer = net.get_submodule("body.mid.2")
    layer.processor = lambda mod, q, k, v: seen.setdefault("qk", (q, k)) and kernels.attention(q, k, v)
    with torch.no_grad():
        net(x, c_noise, known, times, anchor)
    layer.processor = None
    q, k = seen["qk"]
    torch.testing.assert_close(rec.maps["mid.2"], torch.softmax(q @ k.transpose(-2, -1) / 4.0, -1))


def test_given_maps_equal_to_its_own_give_the_default_output():
    net = small_motion()
    x, c_noise, known, times, anchor = inputs()
    rec = TemporalMaps.record()
    with torch.no_grad():
        base = net(x, c_noise, known, times, anchor, temporal_maps=rec)
        given = net(x, c_noise, known, times, anchor, temporal_maps=TemporalMaps.replace(rec.maps))
        uniform = {k: torch.full_like(m, 1.0 / T) for k, m in rec.maps.items()}
        other = net(x, c_noise, known, times, anchor, temporal_maps=TemporalMaps.replace(uniform))
    torch.testing.assert_close(given, base, atol=1e-6, rtol=1e-5)
    assert (other - base).abs().max() > 1e-3  # the given maps are what the layers use


def recorded_maps(net):
    """The test inputs and the maps `net` records on them (no grad)."""
    args = inputs()
    rec = TemporalMaps.record()
    with torch.no_grad():
        net(*args, temporal_maps=rec)
    return args, rec


def test_given_maps_are_checked_per_layer():
    net = small_motion()
    (x, c_noise, known, times, anchor), rec = recorded_maps(net)
    with torch.no_grad():
        missing = dict(rec.maps)
        del missing["mid.2"]
        with pytest.raises(ShapeError, match="no maps given for temporal attention layer 'mid.2'"):
            net(x, c_noise, known, times, anchor, temporal_maps=TemporalMaps.replace(missing))
        with pytest.raises(ShapeError, match=r"maps of layer 'down.0.1' must be"):  # maps of one sample only
            net(x[:1], c_noise[:1], known[:1], times[:1], anchor[:1], temporal_maps=TemporalMaps.replace(rec.maps))
    with pytest.raises(ConfigError, match="mode must be one of"):
        TemporalMaps("borrow")


def test_rotated_maps_are_the_forward_maps_flipped_on_both_axes():
    _, rec = recorded_maps(small_motion())
    rot = rec.rotated()
    assert rot.mode == "replace" and rot.maps.keys() == rec.maps.keys()
    for key, m in rec.maps.items():
        assert torch.equal(rot.maps[key], torch.flip(m, dims=(-2, -1)))
        for i, j in ((0, 0), (0, T - 1), (1, 3), (T - 1, 2)):  # P_b[i, j] = P_f[T-1-i, T-1-j]
            assert torch.equal(rot.maps[key][..., i, j], m[..., T - 1 - i, T - 1 - j])
        torch.testing.assert_close(rot.maps[key].sum(-1), torch.ones(m.shape[:-1]))  # still row-stochastic
    with pytest.raises(ShapeError):
        rotate_maps(torch.zeros(2, 3))


def test_temporal_maps_under_autocast_and_checkpointing():
    net = small_motion()
    net.body.grad_checkpointing = True
    net.train()
    x, c_noise, known, times, anchor = inputs()
    with torch.no_grad():
        rec = TemporalMaps.record()
        net(x, c_noise, known, times, anchor, temporal_maps=rec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c_noise, known, times, anchor, temporal_maps=rec.rotated())
    out.float().square().mean().backward()  # recomputation reads the same entries
    assert torch.isfinite(out.float()).all()
    assert net.body.mid[2].to_v.weight.grad is not None and net.body.mid[2].to_q.weight.grad is None


# ----------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A latent cache (8 videos of 10 frames of 4x8x8, a drifting blob) and a forward model
    exported with a training record that fits it."""
    root = tmp_path_factory.mktemp("backward")
    g = torch.Generator().manual_seed(0)

    def entries():
        for i in range(8):
            base = torch.randn(1, 4, 8, 8, generator=g)
            drift = torch.randn(1, 4, 8, 8, generator=g)
            yield f"v{i}.mp4", base + 0.2 * torch.arange(10.0).view(10, 1, 1, 1) * drift, {"fps": 8.0}

    write_cache(root / "cache", entries(), {"autoencoder": None, "latent_scale": 1.0, "size": [32, 32]})
    record = {"stage": "motion", "sigma_data": 0.5, "size": 32, "latent_scale": 1.0, "autoencoder": None,
              "window": 4, "stride": [1, 2], "max_span": 6.0, "frame_step": 1.0}
    small_motion(temporal_levels=(1,)).save_pretrained(root / "forward", training=record)
    small_motion(temporal_levels=(1,)).save_pretrained(root / "backward", training={**record, "stage": "backward"})
    from vidm.models import ContentUNet, ContentUNetConfig

    ContentUNet(ContentUNetConfig(model_channels=16, ch_mult=(1, 2), attn_levels=(1,), head_dim=16,
                                  norm_groups=4)).save_pretrained(root / "content")
    return root


def overrides(data, *extra) -> list[str]:
    return [f"run.init_from={data / 'forward'}", f"data.latents={data / 'cache'}", "data.num_frames=4",
            "data.stride=[1, 2]", "data.batch_size=2", "data.val_clips=2", "data.autoencoder=null", "model.preset=null",
            "run.mixed_precision=no", "run.progress=false", "diffusion.sample_steps=2", "diffusion.num_samples=2",
            *extra]


def make_stage(data, *extra):
    from vidm.train.backward import BackwardStage
    from vidm.train.config import BackwardTrainConfig, load_config

    cfg = load_config(BackwardTrainConfig, None, overrides(data, *extra))
    acc = SimpleNamespace(device=torch.device("cpu"), is_main_process=True, autocast=nullcontext)
    stage = BackwardStage(cfg, acc, "test.yaml")
    stage.setup()
    return stage


def batch_of(stage, n=2):
    return stage.collate([stage.train_set[(i, 10 + i)] for i in range(n)])


def test_forward_model_sees_the_same_noisy_window_in_forward_order(data):
    """The paper's setting: the forward model runs on the noisy window in forward order, at the
    same sigma, its first frame given and as anchor; the backward model on the same noisy
    window reversed, its first frame (the original last) given and as anchor, times reversed,
    fed the forward maps rotated."""
    stage = make_stage(data, "condition.p_drop_known=0", "condition.p_drop_anchor=0")
    seen = {}

    def spy(name, fn):
        def call(x, sigma, **cond):
            seen[name] = (x.clone(), sigma.clone(), cond)
            return fn(x, sigma, **cond)
        return call

    forward = stage.forward_denoiser()
    stage.forward_denoiser = lambda: spy("forward", forward)
    batch = batch_of(stage)
    x0, _, times = stage.latents_of(batch)
    stage.loss(spy("backward", stage.wrap(stage.net)), batch, torch.Generator().manual_seed(0))
    (x_f, s_f, c_f), (x_b, s_b, c_b) = seen["forward"], seen["backward"]
    n = x0.shape[1]
    assert torch.equal(x_f[:, 0], x0[:, 0]) and torch.equal(x_b[:, 0], x0[:, -1])  # each clip's given frame
    assert torch.equal(x_f[:, 1:-1], x_b.flip(1)[:, 1:-1])  # the same noisy frames in between, mirrored
    assert not torch.equal(x_f[:, -1], x0[:, -1]) and not torch.equal(x_b[:, -1], x0[:, 0])  # the other end: noisy
    assert bool((s_f[:, 0] == 0).all() and (s_b[:, 0] == 0).all())  # the same sigma, 0 at the given frame
    assert bool((s_f[:, 1:] == s_f[:, 1:2]).all()) and torch.equal(s_f, s_b)
    assert torch.equal(c_f["anchor"], x0[:, 0]) and torch.equal(c_b["anchor"], x0[:, -1])
    assert torch.equal(c_f["times"], times) and torch.equal(c_b["times"], times[:, -1:] - times.flip(1))
    assert bool((c_b["times"][:, 0] == 0).all())
    fwd, bwd = c_f["temporal_maps"], c_b["temporal_maps"]
    assert fwd.mode == "record" and bwd.mode == "replace" and len(fwd.maps) == 4
    for key, m in fwd.maps.items():
        assert m.shape[-1] == n and torch.equal(bwd.maps[key], m.flip((-2, -1)))


def test_only_temporal_value_and_output_projections_get_gradients(data):
    from vidm.train.backward import backward_parameter_names

    stage = make_stage(data)
    names = set(backward_parameter_names(stage.net))
    assert len(names) == 4 * 4 and all(".to_v." in n or ".to_out." in n for n in names)  # 4 layers: v, out (w, b)
    assert {n for n, p in stage.net.named_parameters() if p.requires_grad} == names
    assert not any(p.requires_grad for p in stage.forward_net.parameters())
    loss, extra = stage.loss(stage.wrap(stage.net), batch_of(stage), torch.Generator().manual_seed(1))
    loss.backward()
    grads = {n for n, p in stage.net.named_parameters() if p.grad is not None}
    assert grads == names and all(stage.net.get_parameter(n).grad.abs().sum() > 0 for n in names)
    assert all(p.grad is None for p in stage.forward_net.parameters())
    assert torch.isfinite(loss) and 0 < extra["known_frac"] <= 0.25


def in_process(argv) -> int:
    from vidm.train.backward import main

    return train_in_process(main, argv)


def test_a_few_steps_change_only_v_and_o_and_export_a_motion_model(data):
    from vidm.models.pretrained import weights_fingerprint
    from vidm.serialization import read_json
    from vidm.train.backward import backward_parameter_names

    runs = data / "runs"
    argv = ["--config", "configs/backward/tiny.yaml", "--name", "bw", f"run.output_dir={runs}", "run.steps=3",
            "run.log_every=1", "run.sample_every=3", "run.val_every=3", "run.checkpoint_every=0", "optim.lr=1e-2",
            "optim.warmup_steps=1", "ema.decay=0.5", *overrides(data)]
    assert in_process(argv) == 0
    before = load_file(str(data / "forward" / "model.safetensors"))
    after = load_file(str(runs / "bw" / "model" / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    forward = MotionUNet.from_pretrained(data / "forward")
    assert changed == set(backward_parameter_names(forward))  # every to_v / to_out of the temporal layers, only
    meta = read_json(runs / "bw" / "model" / "config.json")
    assert meta["kind"] == "motion" and meta["config"] == forward.config.to_dict()
    rec = meta["training"]
    assert rec["stage"] == "backward" and rec["window"] == 4 and rec["max_span"] == 6.0
    assert rec["forward_model"] == weights_fingerprint(forward) and rec["sigma_data"] == 0.5
    assert list((runs / "bw" / "samples").glob("step-0000003-backward_prediction.gif"))
    assert MotionUNet.from_pretrained(runs / "bw" / "model").training_record["stage"] == "backward"


@pytest.mark.parametrize("extra, needle", [
    (["run.init_from=null"], "run.init_from is required"),
    (["run.init_from={data}/content"], "holds a content model, not a motion model"),
    (["run.init_from={data}/nowhere"], "run.init_from:"),
    (["run.init_from={data}/backward"], "holds a backward-motion model"),
    (["run.trainable=[body.conv_out]"], "run.trainable: the backward fine-tune trains exactly"),
    (["run.init_skip=[body.conv_out]"], "run.init_skip"),
    (["model.model_channels=8"], "model.model_channels: the backward model is a copy of run.init_from"),
    (["model.preset=tiny"], "model.preset is 'tiny', but run.init_from"),
    (["data.num_frames=5"], "trained with window 4, this run has 5 (data.num_frames)"),
    (["diffusion.sigma_data=1.0"], "trained with sigma_data 0.5"),
    (["condition.known_frames=4"], "condition.known_frames must be 1 to"),
])
def test_bad_config_is_a_one_line_error(data, capsys, extra, needle):
    argv = ["--config", "configs/backward/tiny.yaml", "--name", "bad", f"run.output_dir={data / 'bad-runs'}",
            *overrides(data), *[e.format(data=data) for e in extra]]
    capsys.readouterr()
    assert in_process(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.backward: error:") and err.count("\n") == 0 and needle in err, err
    assert not (data / "bad-runs" / "bad").exists()
