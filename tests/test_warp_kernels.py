"""The reference decoder's sampling kernels: bilinear, bicubic and the learned per-pixel mix."""

import numpy as np
import pytest
import torch

from vidm.errors import ConfigError, ShapeError
from vidm.models.autoencoder import AutoencoderKL
from vidm.models.presets import get_preset
from vidm.models.reference_decoder import REF_WARPS
from vidm.models.warp import backward_warp


def _bilinear_before(img, flow):
    """The bilinear warp as written before the cubic kernel existed (the bit-identity reference)."""
    N, C, H, W = img.shape
    xs = (torch.arange(W, dtype=img.dtype).view(1, 1, W) + flow[:, 0] * W).clamp(0, W - 1)
    ys = (torch.arange(H, dtype=img.dtype).view(1, H, 1) + flow[:, 1] * H).clamp(0, H - 1)
    x0, y0 = xs.floor(), ys.floor()
    wx, wy = (xs - x0).unsqueeze(1), (ys - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    flat = img.reshape(N, C, H * W)

    def tap(y, x):
        return flat.gather(2, (y * W + x).view(N, 1, H * W).expand(N, C, H * W)).view(N, C, H, W)

    return (tap(y0, x0) * (1 - wx) + tap(y0, x1) * wx) * (1 - wy) + (tap(y1, x0) * (1 - wx) + tap(y1, x1) * wx) * wy


def _random(seed=0, shape=(2, 3, 17, 23), scale=1.5):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    img = torch.rand(shape, generator=g)
    flow = torch.randn(N, 2, H, W, generator=g) * scale / torch.tensor([W, H]).view(1, 2, 1, 1)
    return img, flow


def test_bilinear_is_bit_identical_to_before():
    img, flow = _random()
    assert torch.equal(backward_warp(img, flow), _bilinear_before(img, flow))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_integer_shifts_are_exact(mode):
    img, _ = _random(1)
    flow = torch.zeros(2, 2, 17, 23)
    assert torch.equal(backward_warp(img, flow, mode), img)
    flow[:, 0], flow[:, 1] = 2.0 / 23, -1.0 / 17  # out[y, x] = img[y - 1, x + 2]
    out = backward_warp(img, flow, mode)
    assert torch.equal(out[..., 1:, :-2], img[..., :-1, 2:])


def test_bicubic_matches_opencv_inside_the_frame():
    cv2 = pytest.importorskip("cv2")
    from vidm.eval.flow import sample_points

    img, flow = _random(2, (1, 3, 19, 26), scale=2.0)
    f_px = (flow[0] * torch.tensor([26.0, 19.0]).view(2, 1, 1)).permute(1, 2, 0).numpy()
    mx, my, _ = sample_points(f_px)
    im = img[0].permute(1, 2, 0).numpy()
    want = cv2.remap(im, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    got = backward_warp(img, flow, "bicubic")[0].permute(1, 2, 0).numpy()
    inside = (mx >= 1) & (mx <= 26 - 3) & (my >= 1) & (my <= 19 - 3)  # all 4x4 taps in the frame
    assert inside.sum() > 100
    assert np.abs(got - want)[inside].max() < 1e-4
    assert np.abs(got - backward_warp(img, flow)[0].permute(1, 2, 0).numpy())[inside].max() > 1e-2


def test_bicubic_keeps_detail_that_bilinear_blurs():
    """A half-pixel shift of a stripe pattern 4 px in period: bilinear averages neighbours and
    is 0.21 off; the cubic kernel lands close to the truly shifted pattern."""
    x = torch.arange(32, dtype=torch.float64)
    img = torch.sin(x * torch.pi / 2).view(1, 1, 1, 32).expand(1, 1, 8, 32).contiguous()
    true = torch.sin((x + 0.5) * torch.pi / 2).view(1, 1, 1, 32)
    flow = torch.zeros(1, 2, 8, 32, dtype=torch.float64)
    flow[:, 0] = 0.5 / 32
    inner = (..., slice(4, -4))
    err_lin = (backward_warp(img, flow) - true)[inner].abs().max()
    err_cub = (backward_warp(img, flow, "bicubic") - true)[inner].abs().max()
    assert err_lin > 0.2 and err_cub < 0.03  # 0.207 and 0.020


def test_sharpness_mixes_the_two_kernels():
    img, flow = _random(3)
    lin, cub = backward_warp(img, flow), backward_warp(img, flow, "bicubic")
    ones = torch.ones(2, 1, 17, 23)
    assert torch.allclose(backward_warp(img, flow, "bicubic", 0 * ones), lin, atol=1e-6)
    assert torch.allclose(backward_warp(img, flow, "bicubic", ones), cub, atol=1e-6)
    half = backward_warp(img, flow, "bicubic", 0.5 * ones)
    assert (half - lin).abs().max() > 1e-3 and (half - cub).abs().max() > 1e-3
    zero = torch.zeros_like(flow)
    s = torch.rand(2, 1, 17, 23)
    assert torch.equal(backward_warp(img, zero, "bicubic", s), img)  # still exact at integer shifts


def test_gradients_reach_flow_and_sharpness():
    img, flow = _random(4, (1, 2, 9, 11))
    img, flow = img.double(), flow.double().requires_grad_()
    s = torch.rand(1, 1, 9, 11, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_()
    # fractional offsets away from 0 so no sample point crosses a pixel under the finite differences
    flow.data = (flow.data * torch.tensor([11.0, 9.0]).view(1, 2, 1, 1)).round().add(0.37) / torch.tensor(
        [11.0, 9.0], dtype=torch.float64).view(1, 2, 1, 1)
    flow.data.clamp_(-0.3, 0.3)
    assert torch.autograd.gradcheck(lambda f, w: backward_warp(img, f, "bicubic", w), (flow, s), eps=1e-7, atol=1e-5)


def test_bad_mode_is_a_clear_error():
    img, flow = _random()
    with pytest.raises(ShapeError, match="bilinear"):
        backward_warp(img, flow, "nearest")
    with pytest.raises(ConfigError, match="ref_warp"):
        get_preset("autoencoder", "tiny").replace(references=2, ref_warp="lanczos").validate()


def _decoder(warp, seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(get_preset("autoencoder", "tiny").replace(references=2, ref_channels=16,
                                                                    ref_warp=warp)).eval()


@pytest.mark.parametrize("warp", REF_WARPS)
@pytest.mark.parametrize("scale", [1, 4])
def test_every_kernel_returns_the_reference_and_moves_it_exactly(warp, scale):
    from tests.test_reference_decoder import hand_set

    ae = _decoder(warp)
    hand_set(ae, flow0=(4.0 / 64, -2.0 / 64))
    if ae.ref_decoder.refine.sharp is not None:  # a learned mix: random sharpness, still exact
        torch.nn.init.normal_(ae.ref_decoder.refine.sharp.weight, std=0.5)
    S = 64 * scale
    ref = torch.rand(1, 1, 3, S, S) * 2 - 1
    with torch.no_grad():
        out = ae.decode(torch.randn(1, 4, 16, 16), ref, torch.tensor([[-1.0]]))
    dx, dy = 4 * scale, -2 * scale
    assert torch.equal(out[..., -dy:, :S - dx], ref[:, 0, :, :S + dy, dx:])


def test_adaptive_decoder_takes_a_fixed_kernel_decoders_weights():
    fixed, adaptive = _decoder("bilinear"), _decoder("adaptive", seed=1)
    theirs, ours = fixed.state_dict(), adaptive.state_dict()
    assert all(ours[k].shape == v.shape for k, v in theirs.items())
    assert sorted(set(ours) - set(theirs)) == ["ref_decoder.refine.sharp.bias", "ref_decoder.refine.sharp.weight"]
    adaptive.load_state_dict(theirs, strict=False)
    refs = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    z, off = torch.randn(1, 4, 16, 16), torch.tensor([[-2.0, 2.0]])
    with torch.no_grad():
        a, b = adaptive.decode(z, refs, off), fixed.decode(z, refs, off)
    assert a.shape == b.shape and torch.isfinite(a).all()


def test_training_reaches_the_sharpness_head():
    from tests.test_reference_decoder import hand_set

    ae = _decoder("adaptive").train()
    hand_set(ae, logits=(0.0, 0.0, -100.0), flow0=(0.3 / 64, 0.2 / 64))  # sub-pixel: the kernel matters
    refs = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    out = ae.decode(torch.randn(2, 4, 16, 16), refs, torch.tensor([[-1.0, 1.0]] * 2))
    (out - refs[:, 0]).abs().mean().backward()
    assert ae.ref_decoder.refine.sharp.weight.grad.abs().sum() > 0
