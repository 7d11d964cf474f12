"""Content and motion UNet backbones: shapes, input validation, zero-init, temporal attention
properties (frame-permutation equivariance, dependence on frame times), conditioning, autocast."""

import pytest
import torch
from einops import rearrange

from vidm.errors import ConfigError, ShapeError
from vidm.models import (ContentUNet, ContentUNetConfig, MotionUNet, MotionUNetConfig, SpaceTimeAttention,
                         TemporalAttention)
from model_helpers import randomize_zero_init

C = 4


from model_helpers import one_thread  # noqa: F401  (autouse: one torch thread)


def small_motion(**kw) -> MotionUNet:
    cfg = dict(model_channels=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), temporal_levels=(0, 1),
               head_dim=16, norm_groups=4)
    cfg.update(kw)
    torch.manual_seed(0)
    return MotionUNet(MotionUNetConfig(**cfg)).eval()


def small_content(**kw) -> ContentUNet:
    cfg = dict(model_channels=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), head_dim=16, norm_groups=4)
    cfg.update(kw)
    torch.manual_seed(0)
    return ContentUNet(ContentUNetConfig(**cfg)).eval()


def motion_inputs(B: int, T: int, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, h, w, generator=g)
    c_noise = torch.randn(B, T, generator=g)
    known = torch.rand(B, T, generator=g) < 0.4
    # uneven, real-valued frame times
    times = torch.cumsum(torch.rand(B, T, generator=g) * 2 + 0.25, dim=1)
    anchor = torch.randn(B, C, h, w, generator=g)
    return x, c_noise, known, times, anchor


@pytest.mark.parametrize("T", [2, 5, 8])
def test_motion_shapes(T):
    net = randomize_zero_init(small_motion())
    x, c_noise, known, times, anchor = motion_inputs(2, T)
    with torch.no_grad():
        out = net(x, c_noise, known=known, times=times, anchor=anchor)
        out_noanchor = net(x, c_noise, known=known, times=times)
    assert out.shape == (2, T, C, 8, 8)
    assert out_noanchor.shape == out.shape
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, out_noanchor)  # the anchor is used


def test_motion_single_frame_and_scalar_noise():
    net = small_motion()
    x, c_noise, known, times, anchor = motion_inputs(3, 1)
    with torch.no_grad():
        out = net(x, c_noise[:, 0], known=known, times=times, anchor=anchor)  # c_noise (B,) broadcast
        out64 = net(x.double(), c_noise.double(), known=known, times=times.double(), anchor=anchor.double())
    assert out.shape == (3, 1, C, 8, 8)
    assert out64.dtype == torch.float32  # float64 sampler state is computed in the weights' dtype


def test_content_shapes_and_labels():
    net = randomize_zero_init(small_content(num_classes=3))
    x = torch.randn(5, C, 8, 16)
    c = torch.randn(5)
    with torch.no_grad():
        out = net(x, c, class_labels=torch.tensor([0, 1, 2, 3, 0]))
        dropped = net(x, c, class_labels=torch.full((5,), 3))
        none = net(x, c)
    assert out.shape == x.shape
    assert torch.equal(dropped, none)  # no labels == the "dropped" label (num_classes)
    assert not torch.allclose(out[:3], dropped[:3])
    with pytest.raises(ConfigError, match="class_labels"):
        net(x, c, class_labels=torch.full((5,), 4))
    with pytest.raises(ConfigError, match="unconditional"):
        small_content()(x, c, class_labels=torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("h, w", [(8, 6), (7, 8), (10, 12)])
def test_odd_sizes_raise(h, w):
    # 3 levels -> total downsampling factor 4; each size breaks h % 4 == 0 or w % 4 == 0
    motion, content = small_motion(ch_mult=(1, 2, 2)), small_content(ch_mult=(1, 2, 2))
    x, c_noise, known, times, _ = motion_inputs(1, 2, h, w)
    with pytest.raises(ShapeError, match=r"divisible by the total downsampling factor 4"):
        motion(x, c_noise, known=known, times=times)
    with pytest.raises(ShapeError, match=r"divisible by the total downsampling factor 4"):
        content(x[:, 0], c_noise[:, 0])


def test_wrong_channels_and_shapes_raise():
    net = small_motion()
    x, c_noise, known, times, anchor = motion_inputs(2, 3)
    with pytest.raises(ShapeError, match="expected 4 channels"):
        net(torch.randn(2, 3, 3, 8, 8), c_noise, known=known, times=times)
    with pytest.raises(ShapeError, match="times"):
        net(x, c_noise, known=known, times=times[:, :2])
    with pytest.raises(ShapeError, match="anchor"):
        net(x, c_noise, known=known, times=times, anchor=anchor[:, :2])
    with pytest.raises(ShapeError, match=r"\(B, T, C, h, w\)"):
        net(x[:, 0], c_noise, known=known, times=times)
    with pytest.raises(ShapeError, match="expected 4 channels"):
        small_content()(torch.randn(2, 5, 8, 8), torch.zeros(2))


def test_zero_init_outputs_zero():
    x, c_noise, known, times, anchor = motion_inputs(2, 4)
    with torch.no_grad():
        assert torch.equal(small_motion()(x, c_noise, known=known, times=times, anchor=anchor), torch.zeros_like(x))
        assert torch.equal(small_content()(x[:, 0], c_noise[:, 0]), torch.zeros_like(x[:, 0]))


def test_temporal_attention_permutation_equivariant_and_time_dependent():
    torch.manual_seed(0)
    B, T, Ch, H, W = 2, 6, 32, 3, 4
    block = randomize_zero_init(TemporalAttention(Ch, head_dim=16, num_groups=4), std=0.2).eval()
    x = torch.randn(B, T, Ch, H, W)
    times = torch.tensor([[0.0, 0.5, 2.0, 3.0, 7.5, 8.0], [1.0, 2.0, 3.0, 5.0, 8.0, 13.0]])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])

    def run(x, times):
        with torch.no_grad():
            return rearrange(block(rearrange(x, "b t c h w -> (b t) c h w"), times), "(b t) c h w -> b t c h w", b=B)

    out = run(x, times)
    out_perm = run(x[:, perm], times[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
    # Permuting frames WITHOUT their times is a different input: the block must notice.
    out_frames_only = run(x[:, perm], times)
    assert (out_frames_only - out[:, perm]).abs().max() > 1e-2
    # Same frames at other times (spacing doubled) -> different output.
    assert (run(x, times * 2) - out).abs().max() > 1e-2
    # Frames really mix: changing one frame changes the others' outputs.
    x2 = x.clone()
    x2[:, 0] = torch.randn(B, Ch, H, W)  # (a constant shift would vanish in the per-frame GroupNorm)
    assert (run(x2, times)[:, 1:] - out[:, 1:]).abs().max() > 1e-3


def test_space_time_attention_mixes_across_frames_and_positions_in_one_step():
    torch.manual_seed(0)
    B, T, Ch, H, W = 2, 4, 32, 5, 3
    block = randomize_zero_init(SpaceTimeAttention(Ch, head_dim=16, num_groups=4), std=0.2).eval()
    x = torch.randn(B, T, Ch, H, W)
    times = torch.tensor([[0.0, 1.0, 2.5, 4.0], [3.0, 1.0, 0.0, 8.0]])
    perm = torch.tensor([2, 0, 3, 1])

    def run(x, times):
        with torch.no_grad():
            return rearrange(block(rearrange(x, "b t c h w -> (b t) c h w"), times), "(b t) c h w -> b t c h w", b=B)

    out = run(x, times)
    torch.testing.assert_close(run(x[:, perm], times[:, perm]), out[:, perm], atol=1e-5, rtol=1e-5)
    assert (run(x[:, perm], times) - out[:, perm]).abs().max() > 1e-2  # times matter
    # One pixel of frame 0 reaches another pixel of frame 2 through this one block (factorised
    # attention needs two blocks for that).
    x2 = x.clone()
    x2[:, 0, :, 0, 0] = torch.randn(B, Ch)
    assert (run(x2, times)[:, 2, :, 4, 2] - out[:, 2, :, 4, 2]).abs().max() > 1e-3
    # Positions are encoded: the block is not equivariant to shifting the frames spatially.
    shifted = run(x.roll(1, dims=-1), times)
    assert (shifted - out.roll(1, dims=-1)).abs().max() > 1e-2


@pytest.mark.parametrize("spacetime_levels,modulation", [((), "embedding"), ((1,), "embedding"),
                                                          ((1,), "positional")])
def test_motion_unet_permutation_equivariant(spacetime_levels, modulation):
    net = randomize_zero_init(small_motion(spacetime_levels=spacetime_levels, modulation=modulation))
    x, c_noise, known, times, anchor = motion_inputs(2, 5)
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        out = net(x, c_noise, known=known, times=times, anchor=anchor)
        out_p = net(x[:, perm], c_noise[:, perm], known=known[:, perm], times=times[:, perm], anchor=anchor)
        out_t = net(x, c_noise, known=known, times=times + 0.5 * torch.arange(5.0))
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-4)
    assert (out_t - net(x, c_noise, known=known, times=times)).abs().max() > 1e-3


def test_motion_conditioning_inputs_matter():
    net = randomize_zero_init(small_motion())
    x, c_noise, known, times, anchor = motion_inputs(2, 4)
    with torch.no_grad():
        base = net(x, c_noise, known=known, times=times, anchor=anchor)
        # dropped anchor (anchor_mask False) is exactly "no anchor"
        dropped = net(x, c_noise, known=known, times=times, anchor=anchor, anchor_mask=torch.tensor([False, True]))
        none = net(x, c_noise, known=known, times=times)
        flipped_known = net(x, c_noise, known=~known, times=times, anchor=anchor)
        other_noise = net(x, c_noise + 1.0, known=known, times=times, anchor=anchor)
    torch.testing.assert_close(dropped[0], none[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(dropped[1], base[1], atol=1e-6, rtol=0)
    assert (flipped_known - base).abs().max() > 1e-3
    assert (other_noise - base).abs().max() > 1e-3


def test_temporal_attention_processor_hook():
    net = randomize_zero_init(small_motion())
    x, c_noise, known, times, _ = motion_inputs(1, 3)
    seen = []

    def processor(module, q, k, v):
        seen.append(q.shape)
        return v  # replace attention by identity mixing

    for m in net.modules():
        if isinstance(m, TemporalAttention):
            m.processor = processor
    with torch.no_grad():
        net(x, c_noise, known=known, times=times)
    assert seen and all(s[2] == 3 for s in seen)  # (B*h*w, heads, T, d)


def test_bf16_autocast_forward():
    net = randomize_zero_init(small_motion())
    x, c_noise, known, times, anchor = motion_inputs(1, 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c_noise, known=known, times=times, anchor=anchor)
        out_c = small_content()(x[:, 0], c_noise[:, 0])
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    assert out_c.shape == x[:, 0].shape


@pytest.mark.parametrize("spacetime_levels,modulation", [((), "embedding"), ((0, 1), "embedding"),
                                                          ((), "positional")])
def test_backward_reaches_all_parameters(spacetime_levels, modulation):
    net = randomize_zero_init(small_motion(spacetime_levels=spacetime_levels, modulation=modulation)).train()
    # one block after each ResBlock stage of those levels that stays at the level's resolution
    assert sorted(net.body.spacetime) == (["down0", "down2", "up0", "up2", "up3"] if spacetime_levels else [])
    x, c_noise, known, times, anchor = motion_inputs(1, 3)
    net(x, c_noise, known=known, times=times, anchor=anchor).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # row 0 or 1 of the known embedding may be unused by this mask; nothing else may be
    assert all(n.startswith("known_embed") for n in no_grad), no_grad


@pytest.mark.parametrize("modulation", ["embedding", "positional"])
def test_gradient_checkpointing_matches(modulation):
    net = randomize_zero_init(small_motion(spacetime_levels=(1,), modulation=modulation)).train()
    x, c_noise, known, times, anchor = motion_inputs(1, 3)
    out = net(x, c_noise, known=known, times=times, anchor=anchor)
    out.square().mean().backward()
    g1 = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    net.body.grad_checkpointing = True
    out2 = net(x, c_noise, known=known, times=times, anchor=anchor)
    out2.square().mean().backward()
    g2 = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    torch.testing.assert_close(out, out2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
