"""EDM loss: value, unknown-frames-only averaging, finiteness over the sigma range, seeding."""

import math

import pytest
import torch

from test_diffusion_denoiser import TinyFrameNet, TinyVideoNet, video_batch
from vidm.diffusion import Denoiser, edm_loss, edm_weight, sample_sigma
from vidm.errors import ConfigError, ShapeError


class ZeroDenoiser:
    """D = 0 at unknown frames, given `known_value` at known frames (sigma == 0)."""

    sigma_data = 0.5

    def __init__(self, known_value=0.0):
        self.known_value = known_value
        self.seen = []

    def __call__(self, x, sigma, **cond):
        self.seen.append((x, sigma, cond))
        D = torch.zeros_like(x)
        return torch.where((sigma == 0)[:, :, None, None, None], torch.full_like(x, self.known_value), D)


def test_loss_value_weighting_and_unknown_average():
    x0, known = video_batch()
    x0[known] = 1000.0  # known frames' content must not count either
    sigma = torch.tensor([0.3, 2.0])
    den = ZeroDenoiser()
    per_sample = edm_loss(den, x0, known, sigma=sigma, reduction="none", times="t")
    unknown = ~known
    for i in range(2):
        expect = edm_weight(sigma[i], 0.5) * (x0[i][unknown[i]] ** 2).mean()
        torch.testing.assert_close(per_sample[i], expect)
    torch.testing.assert_close(edm_loss(den, x0, known, sigma=sigma), per_sample.mean())
    # the denoiser got clean known frames, per-frame sigma with 0 at known, and the cond kwargs
    x_in, sigma_in, cond = den.seen[0]
    assert torch.equal(x_in[known], x0[known]) and torch.equal(sigma_in == 0, known)
    assert torch.equal(sigma_in[~known], sigma[:, None].expand(2, 5)[~known])
    assert cond == {"times": "t"}


def test_changing_output_at_known_frames_leaves_loss_unchanged():
    x0, known = video_batch()
    kw = dict(generator=None, sigma=torch.tensor([0.5, 5.0]), noise=torch.randn_like(x0))
    base = edm_loss(ZeroDenoiser(0.0), x0, known, **kw)
    for value in (123.0, float("inf"), float("nan")):
        assert torch.equal(edm_loss(ZeroDenoiser(value), x0, known, **kw), base)
    # and with the real preconditioned Denoiser, whatever the backbone does at known frames
    class Shifted(TinyVideoNet):
        def forward(self, x, c_noise, known, **cond):
            return super().forward(x, c_noise, known) + 50.0 * known[:, :, None, None, None]

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = edm_loss(Denoiser(TinyVideoNet(seed=4)), x0, known, g())
    b = edm_loss(Denoiser(Shifted(seed=4)), x0, known, g())
    assert torch.equal(a, b)


def test_finite_over_sigma_range_with_gradients():
    x0, known = video_batch(b=8)
    known[:] = False
    known[:, 0] = True
    net = TinyVideoNet()
    sigma = torch.logspace(math.log10(0.002), math.log10(80.0), 8)
    loss = edm_loss(Denoiser(net), x0, known, torch.Generator().manual_seed(0), sigma=sigma, reduction="none")
    assert torch.isfinite(loss).all() and bool((loss > 0).all())
    # EDM weighting keeps every sigma's loss O(1) for an O(1) backbone error
    assert float(loss.detach().max()) < 1e3
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_frame_model_and_all_known_samples():
    x0 = torch.randn(4, 2, 8, 8)
    loss = edm_loss(Denoiser(TinyFrameNet()), x0, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    v, known = video_batch()
    known[0] = True  # a sample with nothing to predict contributes 0 and is left out of the mean
    per = edm_loss(ZeroDenoiser(), v, known, sigma=torch.tensor([1.0, 1.0]), reduction="none")
    assert per[0] == 0
    torch.testing.assert_close(edm_loss(ZeroDenoiser(), v, known, sigma=torch.tensor([1.0, 1.0])), per[1])


def test_seeded_and_log_normal():
    x0, known = video_batch()
    den = Denoiser(TinyVideoNet())
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    assert torch.equal(edm_loss(den, x0, known, g(1)), edm_loss(den, x0, known, g(1)))
    assert not torch.equal(edm_loss(den, x0, known, g(1)), edm_loss(den, x0, known, g(2)))
    ln_sigma = sample_sigma(50_000, g(0)).log()
    assert abs(ln_sigma.mean().item() + 1.2) < 0.02 and abs(ln_sigma.std().item() - 1.2) < 0.02


def test_bad_arguments():
    x0, known = video_batch()
    with pytest.raises(ShapeError, match="known"):
        edm_loss(ZeroDenoiser(), x0, known[:, :3])
    with pytest.raises(ConfigError, match="reduction"):
        edm_loss(ZeroDenoiser(), x0, known, reduction="sum")
    with pytest.raises(ConfigError, match="sigma_data"):
        edm_loss(lambda x, s: x, x0, known)


def test_start_replaces_x0_under_the_noise_but_not_as_the_target():
    x0 = torch.randn(2, 4, 3, 5, 5)
    start = torch.randn(2, 4, 3, 5, 5)
    known = torch.tensor([[True, False, False, True], [False, False, True, True]])
    sigma, noise = torch.tensor([0.5, 2.0]), torch.randn(2, 4, 3, 5, 5)
    seen = {}

    def denoiser(x, s, **cond):
        seen["x"] = x
        return x0  # a perfect denoiser: zero loss whatever the input

    loss = edm_loss(denoiser, x0, known, sigma=sigma, noise=noise, start=start, sigma_data=0.5)
    want = torch.where(known[..., None, None, None], x0, start + sigma.view(2, 1, 1, 1, 1) * noise)
    assert torch.equal(seen["x"], want) and float(loss) == 0.0
    with pytest.raises(ShapeError):
        edm_loss(denoiser, x0, known, start=start[:, :3], sigma_data=0.5)
