"""Sampler math against exact closed-form EDM denoisers (1-D Gaussian and 2-component mixture),
order of convergence, schedule, registry, and seeding."""

import math

import pytest
import torch

from vidm.diffusion import (
    SAMPLERS,
    get_sampler,
    get_sigmas_karras,
    num_evaluations,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)
from vidm.errors import ConfigError, ShapeError, VidmError

N = 20_000
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian_denoiser(m, s):
    """Exact D(x; sigma) = E[x0 | x0 + sigma n = x] for x0 ~ N(m, s^2)."""
    return lambda x, sigma: m + s**2 / (s**2 + sigma**2) * (x - m)


def mixture_denoiser(pi, mu, sd):
    """Exact denoiser for pi_0 N(mu_0, sd_0^2) + pi_1 N(mu_1, sd_1^2): the posterior mean of
    each Gaussian component, weighted by its responsibility r_1 = sigmoid(log-odds)."""

    def denoise(x, sigma):
        var = [sd[k] ** 2 + float(sigma) ** 2 for k in (0, 1)]
        log_odds = (math.log(pi[1] / pi[0]) - 0.5 * math.log(var[1] / var[0])
                    - 0.5 * ((x - mu[1]) ** 2 / var[1] - (x - mu[0]) ** 2 / var[0]))
        D_k = [mu[k] + sd[k] ** 2 / var[k] * (x - mu[k]) for k in (0, 1)]
        return D_k[0] + torch.sigmoid(log_odds) * (D_k[1] - D_k[0])

    return denoise


def gaussian_start(m, s, seed=0):
    # An exact sample of p(x; sigma_max) = N(m, s^2 + sigma_max^2), so only the solver errs.
    z = torch.randn(N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return m + (s**2 + SIGMA_MAX**2) ** 0.5 * z


def run(name, denoise, x, n, seed=7):
    out = get_sampler(name)(denoise, x, get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX),
                            generator=torch.Generator().manual_seed(seed))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    return out


# (sampler, steps, relative tolerance on the std). Heun with 18 steps = 35 network evaluations
# (EDM's budget); on a 1-D Gaussian the std is ~5% high there and ~1% at 35 steps (2nd order).
GAUSS_CASES = [("heun", 18, 0.07), ("heun", 35, 0.03), ("dpmpp_2m", 20, 0.07),
               ("dpmpp_2m", 40, 0.03), ("euler", 200, 0.03), ("euler_ancestral", 200, 0.04)]


@pytest.mark.parametrize("name,n,tol", GAUSS_CASES)
def test_gaussian_mean_and_std(name, n, tol):
    m, s = 1.5, 0.5
    out = run(name, gaussian_denoiser(m, s), gaussian_start(m, s), n)
    assert abs(out.mean().item() - m) < 0.02 * m
    assert abs(out.std().item() / s - 1) < tol


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "euler"])
def test_order_of_convergence(name):
    """Doubling the steps cuts the std error ~4x (2nd order) or ~2x (Euler)."""
    m, s = 0.0, 0.5
    den, x = gaussian_denoiser(m, s), gaussian_start(m, s)
    # reference: the exact probability-flow map of this x (Gaussian: linear in x)
    exact_std = (x * s / (s**2 + SIGMA_MAX**2) ** 0.5).std().item()
    errs = [abs(run(name, den, x, n).std().item() - exact_std) for n in (20, 40)]
    ratio = errs[1] / errs[0]
    if name == "euler":
        assert 0.4 < ratio < 0.6
    else:
        assert ratio < 0.3


MIX = dict(pi=(0.3, 0.7), mu=(-2.0, 2.0), sd=(0.5, 0.6))


def mixture_start(seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = (torch.rand(N, generator=g, dtype=torch.float64) < MIX["pi"][1]).long()
    mu, sd = torch.tensor(MIX["mu"], dtype=torch.float64), torch.tensor(MIX["sd"], dtype=torch.float64)
    z = torch.randn(N, generator=g, dtype=torch.float64)
    return mu[comp] + (sd[comp] ** 2 + SIGMA_MAX**2).sqrt() * z


@pytest.mark.parametrize("name,n,tol_std", [("heun", 18, 0.08), ("heun", 35, 0.04),
                                            ("dpmpp_2m", 20, 0.09),
                                            ("euler_ancestral", 200, 0.05)])
def test_mixture_weights_means_stds(name, n, tol_std):
    out = run(name, mixture_denoiser(**MIX), mixture_start(), n)
    # components sit 4+ std apart, so the sign tells them apart
    for k, part in enumerate((out[out < 0], out[out >= 0])):
        assert abs(len(part) / N - MIX["pi"][k]) < 0.015
        assert abs(part.mean().item() - MIX["mu"][k]) < 0.03 * abs(MIX["mu"][k])
        assert abs(part.std().item() / MIX["sd"][k] - 1) < tol_std


def test_sigmas_karras():
    s = get_sigmas_karras(18, 0.002, 80.0)
    assert s.shape == (19,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002) and s[-1] == 0
    assert bool((s[1:] < s[:-1]).all())
    # rho = 1 is linear
    torch.testing.assert_close(get_sigmas_karras(5, 1.0, 5.0, rho=1)[:-1],
                               torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="sigma_min"):
        get_sigmas_karras(10, 0.0, 80.0)
    with pytest.raises(ConfigError, match="n must be"):
        get_sigmas_karras(0)


def test_registry_and_bad_input():
    assert SAMPLERS == {"euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m,
                        "euler_ancestral": sample_euler_ancestral}
    with pytest.raises(VidmError, match="valid: dpmpp_2m, euler, euler_ancestral, heun"):
        get_sampler("ddim")
    assert num_evaluations("heun", 18) == 35 and num_evaluations("dpmpp_2m", 20) == 20
    den = gaussian_denoiser(0.0, 1.0)
    with pytest.raises(ConfigError, match="non-increasing"):
        sample_euler(den, torch.zeros(3), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ShapeError, match="sigmas"):
        sample_euler(den, torch.zeros(3), torch.tensor([1.0]))
    with pytest.raises(ShapeError, match="noise_mask"):
        sample_euler_ancestral(den, torch.zeros(2, 3), get_sigmas_karras(3), noise_mask=torch.ones(4))


def test_call_counts_sigma_type_and_callback():
    calls, steps = [], []

    def den(x, sigma):
        assert sigma.ndim == 0 and sigma.dtype == x.dtype
        calls.append(float(sigma))
        return x * 0.5

    x = torch.randn(4, dtype=torch.float32)
    sample_heun(den, x, get_sigmas_karras(5), callback=lambda d: steps.append(d["i"]))
    assert len(calls) == num_evaluations("heun", 5) and steps == [0, 1, 2, 3, 4]
    # low-precision input state is promoted to float32
    assert sample_euler(den, x.bfloat16(), get_sigmas_karras(3)).dtype == torch.float32


def test_seeding():
    den = gaussian_denoiser(0.0, 1.0)
    x = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    sig = get_sigmas_karras(10)
    a = sample_euler_ancestral(den, x, sig, generator=torch.Generator().manual_seed(5))
    b = sample_euler_ancestral(den, x, sig, generator=torch.Generator().manual_seed(5))
    c = sample_euler_ancestral(den, x, sig, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # eta = 0 is deterministic Euler
    torch.testing.assert_close(sample_euler_ancestral(den, x, sig, eta=0.0), sample_euler(den, x, sig))


def test_noise_mask_keeps_masked_elements():
    x = torch.randn(2, 3, dtype=torch.float64)
    keep = torch.tensor([[True], [False]])  # noise only into row 0

    def den(y, sigma):  # returns its input in row 1, like a known frame
        return torch.where(keep, 0.5 * y, y)

    out = sample_euler_ancestral(den, x, get_sigmas_karras(8), generator=torch.Generator().manual_seed(0),
                                 noise_mask=keep)
    assert torch.equal(out[1], x[1]) and not torch.allclose(out[0], x[0])
