"""EDM preconditioning (Karras et al. 2022, Table 1): the `Denoiser` wraps a backbone F.

    D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma * sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd = sigma_data).

With a motion backbone whose config has `prior_mean = "known"`, the skip connection pulls toward
the known frames' interpolation m (`vidm.diffusion.prior`) instead of toward 0:

    D(x; sigma) = m + c_skip(sigma) * (x - m) + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

so F learns the residual x0 - m; the backbone's input is unchanged (it sees the known frames
and can tell m itself), which keeps a plain model's features valid when one is fine-tuned into
this parameterisation (with its output layer restarted: see `run.init_skip`).

Sigma may differ per frame. sigma == 0 marks a known (given, clean) frame: D returns the input
there exactly (torch.where), so samplers can keep known frames bit-exact.

Precision: the backbone runs under whatever autocast is active; the preconditioning algebra is
done in float32 (float64 if x is float64) and D is returned in that dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from vidm.diffusion.prior import known_frame_mean
from vidm.errors import ConfigError, ShapeError

# c_noise uses ln(sigma); known frames (sigma == 0) get the smallest sigma EDM trains on, so
# the backbone's noise embedding stays finite (their output is discarded anyway).
SIGMA_NOISE_FLOOR = 0.002


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other dtype is done in float32 (never bf16/fp16)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def edm_precond(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) for a tensor of sigmas (any shape, sigma >= 0)."""
    sd2 = sigma_data**2
    norm = sigma**2 + sd2
    c_skip = sd2 / norm
    c_out = sigma * sigma_data / norm.sqrt()
    c_in = norm.rsqrt()
    c_noise = sigma.clamp(min=SIGMA_NOISE_FLOOR).log() / 4
    return c_skip, c_out, c_in, c_noise


def broadcast_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """Sigma as (B, T) for video x (B, T, C, H, W) or (B,) for frames x (B, C, H, W).

    Accepts a Python number, a 0-d tensor (one sigma for everything, as samplers pass it),
    (B,) (one per sample, broadcast over frames) or (B, T) (one per frame, video only).
    """
    dtype = compute_dtype(x)
    sigma = torch.as_tensor(sigma, device=x.device).to(dtype)
    if x.ndim == 5:
        b, t = x.shape[:2]
        if sigma.ndim == 1 and sigma.shape[0] == b:
            sigma = sigma[:, None]
        elif not (sigma.ndim == 0 or sigma.shape == (b, t)):
            raise ShapeError(
                f"Denoiser: sigma must be scalar, (B,) or (B, T) = {(b, t)} for video x "
                f"{tuple(x.shape)}, got {tuple(sigma.shape)}"
            )
        return sigma.expand(b, t)
    if x.ndim == 4:
        b = x.shape[0]
        if not (sigma.ndim == 0 or sigma.shape == (b,)):
            raise ShapeError(
                f"Denoiser: sigma must be scalar or (B,) = ({b},) for frames x "
                f"{tuple(x.shape)}, got {tuple(sigma.shape)}"
            )
        return sigma.expand(b)
    raise ShapeError(
        f"Denoiser: x must be video (B, T, C, H, W) or frames (B, C, H, W), got {tuple(x.shape)}"
    )


def _net_dtype(net: nn.Module, fallback: torch.dtype) -> torch.dtype:
    # Feed the backbone its own weight dtype, so a float64 sampler state works with float32
    # weights; under autocast the backbone's ops recast anyway.
    for p in net.parameters():
        return p.dtype if p.is_floating_point() else fallback
    return fallback


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser D(x; sigma) around a backbone `net`.

    Video: x (B, T, C, H, W), sigma (B, T) / (B,) / scalar; calls
        net(c_in * x, c_noise, known=(sigma == 0), **cond) with c_noise (B, T).
    Frames: x (B, C, H, W), sigma (B,) / scalar; calls net(c_in * x, c_noise, **cond),
        c_noise (B,).
    Returns D_x with x's shape, float32 (float64 if x is float64); frames with sigma == 0 are
    returned exactly as given.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        dtype = compute_dtype(x)
        sigma = broadcast_sigma(sigma, x)  # (B, T) or (B,), in dtype
        x = x.to(dtype)
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, self.sigma_data)
        known = sigma == 0  # (B, T) or (B,)
        view = (*sigma.shape, *([1] * (x.ndim - sigma.ndim)))  # broadcast over (C, H, W)
        prior = None
        if x.ndim == 5 and getattr(getattr(self.net, "config", None), "prior_mean", "none") == "known":
            if cond.get("times") is None:
                raise ConfigError("Denoiser: a prior_mean='known' model needs times= (B, T)")
            prior = known_frame_mean(x, known, torch.as_tensor(cond["times"], device=x.device))
        net_dtype = _net_dtype(self.net, dtype)
        net_in = (c_in.view(view) * x).to(net_dtype)
        c_noise = c_noise.to(torch.float64 if net_dtype == torch.float64 else torch.float32)
        if x.ndim == 5:
            F_x = self.net(net_in, c_noise, known=known, **cond)
        else:
            F_x = self.net(net_in, c_noise, **cond)
        if F_x.shape != x.shape:
            raise ShapeError(
                f"Denoiser: backbone returned {tuple(F_x.shape)}, expected {tuple(x.shape)}"
            )
        if prior is None:
            D_x = c_skip.view(view) * x + c_out.view(view) * F_x.to(dtype)
        else:
            D_x = prior + c_skip.view(view) * (x - prior) + c_out.view(view) * F_x.to(dtype)
        # torch.where, not c_out == 0: a non-finite backbone output must not leak into known frames.
        return torch.where(known.view(view), x, D_x)
