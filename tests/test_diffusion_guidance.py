"""Classifier-free guidance and the two infill branches (guidance on the input frames)."""

import pytest
import torch

from test_diffusion_denoiser import TinyVideoNet, video_batch
from vidm.diffusion import (
    Denoiser,
    cfg_denoiser,
    dropped_known_denoiser,
    get_sigmas_karras,
    guided_infill_denoiser,
    initial_state,
    known_frame_denoiser,
    sample_dpmpp_2m,
)
from vidm.errors import ShapeError


def branches():
    calls = {"cond": 0, "uncond": 0}

    def cond_fn(x, sigma):
        calls["cond"] += 1
        return torch.sin(x) * 3 + sigma

    def uncond_fn(x, sigma):
        calls["uncond"] += 1
        return torch.cos(x) - sigma

    return cond_fn, uncond_fn, calls


def test_w1_is_cond_w0_is_uncond_and_formula():
    x, s = torch.randn(2, 3, 4), torch.tensor(1.7)
    cond_fn, uncond_fn, calls = branches()
    assert torch.equal(cfg_denoiser(cond_fn, uncond_fn, 1.0)(x, s), cond_fn(x, s))
    assert calls["uncond"] == 0  # w = 1 never evaluates the unconditional branch
    assert torch.equal(cfg_denoiser(cond_fn, uncond_fn, 0.0)(x, s), uncond_fn(x, s))
    D_c, D_u = cond_fn(x, s), uncond_fn(x, s)
    torch.testing.assert_close(cfg_denoiser(cond_fn, uncond_fn, 3.0)(x, s), D_u + 3.0 * (D_c - D_u))


def test_branch_inputs():
    net = TinyVideoNet()
    den = Denoiser(net)
    x_known, known = video_batch()
    x = initial_state(x_known, known, 5.0, torch.Generator().manual_seed(0))
    assert torch.equal(x[known], x_known[known])
    sigma = torch.tensor(5.0)

    known_frame_denoiser(den, known, times="T")(x, sigma)
    call = net.calls[-1]
    assert torch.equal(call["known"], known) and call["times"] == "T"

    noise = torch.randn_like(x)
    D_u = dropped_known_denoiser(den, known, noise=noise, times="T")(x, sigma)
    call = net.calls[-1]
    assert not call["known"].any()  # every frame is an unknown frame at sigma
    c_in = (25 + 0.25) ** -0.5
    # known slots carry the known frames noised to the current sigma with the fixed noise
    torch.testing.assert_close(call["x"][known], c_in * (x_known + 5.0 * noise)[known])
    torch.testing.assert_close(call["x"][~known], c_in * x[~known])
    assert torch.equal(D_u[known], x[known])  # so guidance leaves known frames exact
    with pytest.raises(ShapeError, match="known"):
        known_frame_denoiser(den, known[:, :2])(x, sigma)


def test_guided_sampling_seeded_and_anchor_drop():
    den = Denoiser(TinyVideoNet())
    x_known, known = video_batch()
    sigmas = get_sigmas_karras(5)

    def sample(seed, w=2.0, uncond=None):
        g = torch.Generator().manual_seed(seed)
        x = initial_state(x_known, known, float(sigmas[0]), g)
        return sample_dpmpp_2m(guided_infill_denoiser(den, known, w, generator=g, uncond=uncond), x, sigmas)

    a, b, c = sample(0), sample(0), sample(1)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(a[known], x_known[known])
    assert not torch.allclose(a, sample(0, w=1.0))  # guidance changes the unknown frames
    # a separate uncond kwargs dict reaches only the unconditional branch
    seen = []

    class Spy(TinyVideoNet):
        def forward(self, x, c_noise, known, **cond):
            seen.append((bool(known.any()), cond.get("anchor_mask")))
            return super().forward(x, c_noise, known)

    den = Denoiser(Spy())
    f = guided_infill_denoiser(den, known, 2.0, cond={"anchor_mask": "keep"}, uncond={"anchor_mask": "drop"},
                               noise=torch.zeros_like(x_known))
    f(x_known, torch.tensor(1.0))
    assert seen == [(True, "keep"), (False, "drop")]
