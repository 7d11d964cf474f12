"""Samplers for the probability-flow ODE / reverse SDE in EDM form (k-diffusion style).

Every sampler is a pure function, called by `vidm.diffusion.sampling` as

    sample_x(denoise, x, sigmas, callback=None, noise_sampler=None) -> x_0

denoise(x, sigma) -> D_x with sigma a 0-d tensor (x's dtype and device); x starts at
sigmas[0] * noise (plus any known frames); sigmas is a decreasing 1-D sequence, normally
ending in 0 (`get_sigmas_karras` appends it). The state is kept in float32, or float64 if x is
float64 (never bf16/fp16). callback(dict(x=, i=, sigma=, sigma_next=, denoised=)) runs once per step.
noise_sampler(x) -> noise of x's shape (a `vidm.diffusion.noise.NoiseSource`) is where a
stochastic sampler gets its fresh noise; deterministic ones ignore it. The built-in samplers
also take `generator=` (and the ancestral one `noise_mask=`) to build one themselves.

Registry. `register(name, calls_per_step=..., last_step_calls=...)` adds a sampler to SAMPLERS
and declares its denoiser calls (for `num_evaluations`); a plain function put into SAMPLERS
counts one call per step. A new sampler is one function and one registry entry.

Known frames. Wherever denoise returns its input exactly (the `Denoiser` does at sigma == 0),
every update below is written as x + c * (something that is exactly 0 there), e.g.
x + (D - x) * c, so those elements come out bit-exact; the noise source is zero there.
"""

from __future__ import annotations

import torch

from vidm.errors import ConfigError, ShapeError
from vidm.diffusion.noise import NoiseSource

SAMPLERS: dict = {}  # name -> sampler function (see `register`)


def register(name: str, calls_per_step: int = 1, last_step_calls: int | None = None):
    """Decorator: SAMPLERS[name] = fn, with its denoiser calls per step declared on it (the
    last step, to sigma = 0, may cost fewer: `last_step_calls`, default calls_per_step)."""

    def add(fn):
        fn.calls_per_step = calls_per_step
        fn.last_step_calls = calls_per_step if last_step_calls is None else last_step_calls
        SAMPLERS[name] = fn
        return fn

    return add


def get_sigmas_karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                      rho: float = 7.0, device=None, dtype=torch.float64) -> torch.Tensor:
    """Karras et al. (2022) Eq. 5 schedule: n sigmas from sigma_max down to sigma_min, then 0.

    Returns (n + 1,) in `dtype` (float64 by default; samplers cast to the state dtype).
    """
    if n < 1:
        raise ConfigError(f"get_sigmas_karras: n must be >= 1, got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ConfigError(
            f"get_sigmas_karras: need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}"
        )
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    if n == 1:
        sigmas = torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=dtype)


def _prepare(x: torch.Tensor, sigmas) -> tuple[torch.Tensor, torch.Tensor]:
    """State in float32/float64 and sigmas in the same dtype/device; validate the schedule."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    sigmas = torch.as_tensor(sigmas).to(device=x.device, dtype=dtype)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ShapeError(f"sampler: sigmas must be 1-D with >= 2 values, got {tuple(sigmas.shape)}")
    if not bool(sigmas[0] > 0) or bool((sigmas[1:] > sigmas[:-1]).any()) or bool((sigmas < 0).any()):
        raise ConfigError("sampler: sigmas must be non-increasing, >= 0, with sigmas[0] > 0")
    return x, sigmas


def _callback(callback, x, i, sigmas, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_next": sigmas[i + 1],
                  "denoised": denoised})


@register("euler")
@torch.no_grad()
def sample_euler(denoise, x, sigmas, callback=None, generator=None, noise_sampler=None) -> torch.Tensor:
    """First-order Euler steps on the probability-flow ODE dx/dsigma = (x - D) / sigma."""
    x, sigmas = _prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        _callback(callback, x, i, sigmas, denoised)
        d = (x - denoised) / sigma  # exactly 0 where denoised == x
        x = x + d * (sigma_next - sigma)
    return x


@register("heun", calls_per_step=2, last_step_calls=1)
@torch.no_grad()
def sample_heun(denoise, x, sigmas, callback=None, generator=None, noise_sampler=None) -> torch.Tensor:
    """EDM's 2nd-order Heun sampler (Karras et al. 2022, Alg. 1, no churn); the last step to
    sigma = 0 is an Euler step. n sigmas + 0 costs 2n - 1 network evaluations."""
    x, sigmas = _prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        _callback(callback, x, i, sigmas, denoised)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        x_euler = x + d * dt
        if sigma_next == 0:
            x = x_euler
            continue
        denoised_2 = denoise(x_euler, sigma_next)
        d_2 = (x_euler - denoised_2) / sigma_next
        x = x + (d + d_2) / 2 * dt  # d == d_2 == 0 exactly where the frames are known
    return x


@register("dpmpp_2m")
@torch.no_grad()
def sample_dpmpp_2m(denoise, x, sigmas, callback=None, generator=None, noise_sampler=None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in lambda = -ln(sigma).

    Written as x_next = x + (1 - sigma_next / sigma) * (D' - x) with
    D' = D + (D - D_prev) / (2 r), which is exactly x wherever D == D_prev == x.
    """
    x, sigmas = _prepare(x, sigmas)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        _callback(callback, x, i, sigmas, denoised)
        if sigma_next == 0:
            x = denoised  # the exact last step of the ODE in this form; equals x at known frames
        else:
            h = sigma.log() - sigma_next.log()
            one_minus_ratio = -torch.expm1(-h)  # 1 - sigma_next / sigma, accurate for small h
            if old_denoised is None:
                d_prime = denoised
            else:
                h_last = sigmas[i - 1].log() - sigma.log()
                d_prime = denoised + (denoised - old_denoised) * (h / (2 * h_last))
            x = x + one_minus_ratio * (d_prime - x)
        old_denoised = denoised
    return x


def get_ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """(sigma_down, sigma_up): deterministic step to sigma_down, then fresh noise of std sigma_up,
    so the marginal at sigma_to is preserved. eta = 0 is plain Euler, eta = 1 is DDPM-like."""
    if eta == 0 or sigma_to == 0:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt()
    )
    sigma_down = (sigma_to**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


@register("euler_ancestral")
@torch.no_grad()
def sample_euler_ancestral(denoise, x, sigmas, callback=None, generator=None, noise_sampler=None,
                           eta: float = 1.0, s_noise: float = 1.0, noise_mask=None) -> torch.Tensor:
    """Euler ancestral sampling: Euler step to sigma_down, then add sigma_up * s_noise * noise.

    noise comes from noise_sampler(x); without one, from NoiseSource(generator, noise_mask)
    (noise_mask: None = everywhere, or broadcastable to x, True/1 where noise is added).
    """
    x, sigmas = _prepare(x, sigmas)
    if noise_sampler is None:
        noise_sampler = NoiseSource(generator, noise_mask).check(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        _callback(callback, x, i, sigmas, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma
        x = x + d * (sigma_down - sigma)
        if sigma_next > 0 and sigma_up > 0:
            x = x + noise_sampler(x) * (sigma_up * s_noise)  # 0 where the source's mask is
    return x


def num_evaluations(name: str, n: int) -> int:
    """Denoiser calls a sampler makes over a schedule of n nonzero sigmas followed by 0, from
    what it declared at `register` (one per step if it declared nothing)."""
    fn = get_sampler(name)
    per_step = getattr(fn, "calls_per_step", 1)
    return per_step * (n - 1) + getattr(fn, "last_step_calls", per_step)


def get_sampler(name: str):
    """The sampler function registered as `name`; raises ConfigError listing valid names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown sampler {name!r}; valid: {', '.join(sorted(SAMPLERS))}"
        ) from None


__all__ = [
    "SAMPLERS", "register", "get_sampler", "get_sigmas_karras", "get_ancestral_step", "num_evaluations",
    "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_euler_ancestral",
]
