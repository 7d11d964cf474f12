"""EDM training loss (Karras et al. 2022, Sec. 5), restricted to unknown frames (RaMViD).

    sigma ~ exp(N(P_mean, P_std^2)), one per sample, shared by its unknown frames, 0 at known
    x_noisy = x0 + sigma * n at unknown frames, x0 (clean) at known frames
    loss    = lambda(sigma) * ||D(x_noisy; sigma) - x0||^2,  lambda = (sigma^2 + sd^2) / (sigma * sd)^2

averaged per element over the unknown frames' elements of each sample. With the EDM
preconditioning lambda * c_out^2 == 1, so the loss is O(1) for every sigma in [0.002, 80].
"""

from __future__ import annotations

import torch

from vidm.diffusion.noise import randn_like_from
from vidm.errors import ConfigError, ShapeError


def sample_sigma(batch: int, generator: torch.Generator | None = None, P_mean: float = -1.2,
                 P_std: float = 1.2, device=None) -> torch.Tensor:
    """Log-normal training sigmas (B,) float32: ln(sigma) ~ N(P_mean, P_std^2)."""
    gen_device = generator.device if generator is not None else device
    ln_sigma = torch.randn(batch, generator=generator, device=gen_device) * P_std + P_mean
    return ln_sigma.exp().to(device)


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma * sd)^2 (sigma > 0)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _sigma_data_of(denoiser) -> float:
    # Unwrap DDP/accelerate wrappers, which do not forward plain attributes.
    inner = getattr(denoiser, "module", denoiser)
    if not hasattr(inner, "sigma_data"):
        raise ConfigError("edm_loss: pass sigma_data= (the denoiser has no .sigma_data)")
    return float(inner.sigma_data)


def edm_loss(denoiser, x0: torch.Tensor, known: torch.Tensor | None = None,
             generator: torch.Generator | None = None, *, P_mean: float = -1.2,
             P_std: float = 1.2, sigma_data: float | None = None,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             start: torch.Tensor | None = None, reduction: str = "mean", **cond) -> torch.Tensor:
    """EDM loss for a video model (x0 (B, T, C, H, W), known (B, T) bool or None = none known)
    or a frame model (x0 (B, C, H, W), known must be None).

    denoiser(x, sigma, **cond) -> D_x, e.g. a `Denoiser`; it receives per-frame sigma (B, T)
    with 0 at known frames, so its backbone gets known = (sigma == 0).
    sigma (B,) and noise (x0's shape) override the random draws (for tests and logging).
    start (x0's shape): what the noise is added to instead of x0 (the target stays x0), to train
    a denoiser that refines an imperfect start (e.g. the splat start of interpolation windows).
    reduction: "mean" -> scalar, the mean of the per-sample losses over samples that have at
    least one unknown frame (0 if none do); "none" -> (B,) per-sample losses (0 where a sample
    has no unknown frame).
    """
    if reduction not in ("mean", "none"):
        raise ConfigError(f"edm_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    if x0.ndim not in (4, 5):
        raise ShapeError(f"edm_loss: x0 must be (B, T, C, H, W) or (B, C, H, W), got {tuple(x0.shape)}")
    sd = _sigma_data_of(denoiser) if sigma_data is None else float(sigma_data)
    dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    x0 = x0.to(dtype)
    b = x0.shape[0]
    if x0.ndim == 5:
        t = x0.shape[1]
        if known is None:
            known = torch.zeros(b, t, dtype=torch.bool, device=x0.device)
        if known.shape != (b, t):
            raise ShapeError(f"edm_loss: known must be (B, T) = {(b, t)}, got {tuple(known.shape)}")
        known = known.to(device=x0.device, dtype=torch.bool)
    elif known is not None:
        raise ShapeError("edm_loss: known= is only for video x0 (B, T, C, H, W)")

    if sigma is None:
        sigma = sample_sigma(b, generator, P_mean, P_std, device=x0.device)
    sigma = torch.as_tensor(sigma, device=x0.device).to(dtype)
    if sigma.shape != (b,):
        raise ShapeError(f"edm_loss: sigma must be (B,) = ({b},), got {tuple(sigma.shape)}")
    if noise is None:
        noise = randn_like_from(x0, generator, dtype=dtype)

    view = (b, *([1] * (x0.ndim - 1)))
    if start is not None and start.shape != x0.shape:
        raise ShapeError(f"edm_loss: start must have x0's shape {tuple(x0.shape)}, got {tuple(start.shape)}")
    x_noisy = (x0 if start is None else start.to(dtype)) + sigma.view(view) * noise.to(dtype)
    if x0.ndim == 5:
        frame_view = (b, t, 1, 1, 1)
        x_noisy = torch.where(known.view(frame_view), x0, x_noisy)  # known frames enter clean
        sigma_in = torch.where(known, torch.zeros_like(sigma[:, None]), sigma[:, None])  # (B, T)
        unknown = ~known.view(frame_view)
    else:
        sigma_in = sigma
        unknown = torch.ones(view, dtype=torch.bool, device=x0.device)

    D_x = denoiser(x_noisy, sigma_in, **cond)
    sq_err = (D_x.to(dtype) - x0) ** 2
    # torch.where, not a 0/1 multiply: anything at known frames (even inf/NaN) must not count.
    sq_err = torch.where(unknown, sq_err, torch.zeros_like(sq_err))
    elems_per_frame = x0[0, 0].numel() if x0.ndim == 5 else x0[0].numel()
    n_unknown = unknown.reshape(b, -1).sum(1) if x0.ndim == 5 else torch.ones(b, device=x0.device)
    per_sample = sq_err.reshape(b, -1).sum(1) / (n_unknown.clamp(min=1) * elems_per_frame)
    per_sample = edm_weight(sigma, sd) * per_sample  # (B,)
    if reduction == "none":
        return per_sample
    has_unknown = (n_unknown > 0).to(dtype)
    return (per_sample * has_unknown).sum() / has_unknown.sum().clamp(min=1)
