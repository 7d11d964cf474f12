"""EDM preconditioning: formulas, sigma == 0 passthrough, shapes, precision, and bit-exact
known frames through every sampler (with and without guidance)."""

import pytest
import torch
from torch import nn

from vidm.diffusion import (
    SAMPLERS,
    Denoiser,
    edm_precond,
    get_sigmas_karras,
    guided_infill_denoiser,
    initial_state,
    known_frame_denoiser,
    noise_mask_for,
)
from vidm.errors import ShapeError


class TinyVideoNet(nn.Module):
    """A random, nonzero stand-in for the motion backbone (same call convention).

    Mixes frames (mean over T) and the noise level, and adds a large term at known frames so a
    leak of the backbone output into known frames could not go unnoticed.
    """

    def __init__(self, channels=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.mix = nn.Linear(1, channels)
        self.calls = []

    def forward(self, x, c_noise, known, times=None, anchor=None, anchor_mask=None):
        # x (B, T, C, H, W), c_noise (B, T), known (B, T) bool
        self.calls.append({"x": x, "c_noise": c_noise, "known": known, "times": times})
        b, t, c, h, w = x.shape
        y = self.conv(x.reshape(b * t, c, h, w)).reshape(b, t, c, h, w)
        y = y + x.mean(1, keepdim=True) + self.mix(c_noise[..., None])[..., None, None]
        return y + 100.0 * known[:, :, None, None, None].to(y.dtype)


class TinyFrameNet(nn.Module):
    def __init__(self, channels=2):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, c_noise, class_labels=None):
        return self.conv(x) + c_noise[:, None, None, None]


def video_batch(b=2, t=5, c=2, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, c, hw, hw, generator=g)
    known = torch.zeros(b, t, dtype=torch.bool)
    known[0, [0, t - 1]] = True  # interpolation
    known[1, :2] = True  # prediction
    return x, known


def test_precond_formulas():
    sigma = torch.tensor([0.0, 0.002, 0.5, 80.0], dtype=torch.float64)
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm_precond(sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.clamp(min=0.002).log() / 4)
    # D = x at sigma = 0 and D -> F-dominated at large sigma: c_skip + c_out^2/sd^2 ... = 1
    torch.testing.assert_close(c_skip + (c_out / sd) ** 2, torch.ones_like(sigma))


def test_sigma_zero_returns_input_exactly():
    net = TinyVideoNet()
    den = Denoiser(net, sigma_data=0.5)
    x, known = video_batch()
    sigma = torch.where(known, 0.0, 3.0)  # (B, T)
    D = den(x, sigma)
    assert torch.equal(D[known], x[known])
    assert not torch.allclose(D[~known], x[~known])
    # all frames at sigma = 0
    assert torch.equal(den(x, torch.zeros(2, 5)), x)
    # backbone convention: c_in * x, c_noise (B, T) with ln(0.002)/4 at known frames, known mask
    call = net.calls[0]
    assert call["c_noise"].shape == (2, 5) and torch.equal(call["known"], known)
    torch.testing.assert_close(call["c_noise"][known], torch.full((4,), torch.tensor(0.002).log().item() / 4))
    torch.testing.assert_close(call["x"][~known], x[~known] / (9 + 0.25) ** 0.5)


def test_nonfinite_backbone_output_does_not_leak_into_known_frames():
    class NaNNet(TinyVideoNet):
        def forward(self, x, c_noise, known, **cond):
            return torch.where(known[:, :, None, None, None], float("nan"), super().forward(x, c_noise, known))

    x, known = video_batch()
    D = Denoiser(NaNNet())(x, torch.where(known, 0.0, 1.0))
    assert torch.equal(D[known], x[known]) and torch.isfinite(D).all()


def test_frames_and_sigma_shapes():
    den = Denoiser(TinyFrameNet())
    x = torch.randn(3, 2, 8, 8)
    assert den(x, 1.0).shape == x.shape
    assert den(x, torch.tensor([1.0, 0.0, 2.0])).shape == x.shape
    assert torch.equal(den(x, torch.tensor([1.0, 0.0, 2.0]))[1], x[1])
    vden = Denoiser(TinyVideoNet())
    v, _ = video_batch()
    assert vden(v, torch.tensor([1.0, 2.0])).shape == v.shape  # (B,) broadcast over frames
    with pytest.raises(ShapeError, match="sigma"):
        vden(v, torch.ones(2, 4))
    with pytest.raises(ShapeError, match="Denoiser"):
        den(torch.randn(2, 8, 8), 1.0)


def test_precision_float32_under_bf16_autocast_and_float64():
    den = Denoiser(TinyVideoNet())
    x, known = video_batch()
    sigma = torch.where(known, 0.0, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        D = den(x.bfloat16(), sigma)
    assert D.dtype == torch.float32
    assert torch.equal(D[known], x.bfloat16().float()[known])
    D64 = den(x.double(), sigma)  # float32 weights, float64 state
    assert D64.dtype == torch.float64 and torch.equal(D64[known], x.double()[known])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("w", [1.0, 2.5])
@pytest.mark.parametrize("autocast", [False, True])
def test_known_frames_bit_exact_through_every_sampler(name, w, autocast):
    den = Denoiser(TinyVideoNet())
    x_known, known = video_batch()
    sigmas = get_sigmas_karras(6, 0.002, 80.0)
    x = initial_state(x_known, known, float(sigmas[0]), torch.Generator().manual_seed(1))
    if w == 1.0:
        denoise = known_frame_denoiser(den, known)
    else:
        denoise = guided_infill_denoiser(den, known, w, generator=torch.Generator().manual_seed(2))
    extra = {"noise_mask": noise_mask_for(known)} if name == "euler_ancestral" else {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = SAMPLERS[name](denoise, x, sigmas, generator=torch.Generator().manual_seed(3), **extra)
    assert out.dtype == torch.float32
    assert torch.equal(out[known], x_known[known])
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[~known], x[~known])  # unknown frames did move
