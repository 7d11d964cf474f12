"""Sampling-time conditioning: known-frame denoisers and classifier-free guidance.

A sampler calls denoise(x, sigma) with one 0-d sigma. For video infilling/prediction the
pipeline turns that into per-frame sigma with 0 at known frames (`known_frame_denoiser`), so
the `Denoiser` passes those frames through exactly.

Guidance on the input frames (VIDIM). The conditional branch sees the known frames clean
(sigma 0, known=True). The unconditional branch (`dropped_known_denoiser`) mirrors the training
dropout, where a dropped known frame becomes an ordinary unknown frame, noisy at the sample's
sigma and supervised: its known slots hold the known frames noised to the *current* sigma,
x_known + sigma * eps, with one fixed eps per sampling run (so the branch is a deterministic
function of (x, sigma), as the ODE solvers assume), every frame at sigma and known=False.
At high sigma these slots carry almost no information (the branch is ~unconditional); as sigma
falls they carry more, so guidance fades out at the fine-detail end. Its output at the known
slots is replaced by the input x there, so D_u == D_c == x at known frames and the guided
output D_u + w * (D_c - D_u) keeps them bit-exact. To drop the anchor as well, pass
anchor_mask = all False in the unconditional branch's cond.

cfg_denoiser(cond_fn, uncond_fn, w) = D_u + w * (D_c - D_u) on the whole output; w = 1 is
cond_fn itself (uncond never called), w = 0 is uncond_fn itself.
"""

from __future__ import annotations

import torch

from vidm.errors import ShapeError
from vidm.diffusion.noise import noise_mask_for, randn_like_from  # noqa: F401 (noise_mask_for: re-export)


def cfg_denoiser(cond_fn, uncond_fn, w: float):
    """Classifier-free guidance: denoise(x, sigma) = D_u + w * (D_c - D_u)."""
    w = float(w)
    if w == 1.0:
        return cond_fn
    if w == 0.0:
        return uncond_fn

    def denoise(x, sigma):
        D_c = cond_fn(x, sigma)
        D_u = uncond_fn(x, sigma)
        return D_u + w * (D_c - D_u)

    return denoise


def _check_known(known: torch.Tensor, x: torch.Tensor, who: str) -> None:
    if x.ndim != 5 or known.shape != x.shape[:2]:
        raise ShapeError(
            f"{who}: known must be (B, T) of video x (B, T, C, H, W); got known "
            f"{tuple(known.shape)}, x {tuple(x.shape)}"
        )


def _frame_view(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, :, None, None, None]  # (B, T) -> (B, T, 1, 1, 1)


def per_frame_sigma(sigma, known: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Scalar sigma -> (B, T) with 0 at known frames."""
    sigma = torch.as_tensor(sigma, device=known.device, dtype=dtype)
    return torch.where(known, torch.zeros((), device=known.device, dtype=dtype), sigma)


def known_frame_denoiser(denoiser, known: torch.Tensor, **cond):
    """Conditional branch: denoise(x, sigma) = denoiser(x, sigma at unknown / 0 at known, **cond).

    x (B, T, C, H, W) must hold the clean known frames at the known slots (see `initial_state`).
    """
    known = known.bool()

    def denoise(x, sigma):
        _check_known(known, x, "known_frame_denoiser")
        return denoiser(x, per_frame_sigma(sigma, known, x.dtype), **cond)

    return denoise


def dropped_known_denoiser(denoiser, known: torch.Tensor, noise: torch.Tensor | None = None,
                           generator: torch.Generator | None = None, **cond):
    """Unconditional branch for guidance on the input frames (see the module docstring).

    noise (B, T, C, H, W): the fixed eps for the known slots; drawn from `generator` on the
    first call if not given. Returns denoise(x, sigma) with output == x at known frames.
    """
    known = known.bool()
    state = {"noise": noise}

    def denoise(x, sigma):
        _check_known(known, x, "dropped_known_denoiser")
        if state["noise"] is None:
            state["noise"] = randn_like_from(x, generator)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        kv = _frame_view(known)
        x_u = torch.where(kv, x + sigma * state["noise"].to(x.dtype), x)
        sigma_all = sigma.expand(known.shape)  # every frame unknown at sigma
        D_u = denoiser(x_u, sigma_all, **cond)
        return torch.where(kv, x, D_u.to(x.dtype))

    return denoise


def guided_infill_denoiser(denoiser, known: torch.Tensor, w: float, *, cond: dict | None = None,
                           uncond: dict | None = None, noise: torch.Tensor | None = None,
                           generator: torch.Generator | None = None):
    """Both branches plus CFG in one call. cond / uncond: keyword conditioning for each branch
    (uncond defaults to cond; e.g. set anchor_mask False there to drop the anchor too)."""
    cond = dict(cond or {})
    uncond = cond if uncond is None else dict(uncond)
    cond_fn = known_frame_denoiser(denoiser, known, **cond)
    uncond_fn = dropped_known_denoiser(denoiser, known, noise=noise, generator=generator, **uncond)
    return cfg_denoiser(cond_fn, uncond_fn, w)


def initial_state(x_known: torch.Tensor, known: torch.Tensor, sigma_max: float,
                  generator: torch.Generator | None = None, dtype=torch.float32,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sampler start: known frames clean, unknown frames sigma_max * N(0, I). (B, T, C, H, W).
    noise (B, T, C, H, W): that N(0, I) draw, given (default: drawn from `generator`)."""
    _check_known(known, x_known, "initial_state")
    x_known = x_known.to(dtype)
    if noise is not None and noise.shape != x_known.shape:
        raise ShapeError(f"initial_state: noise {tuple(noise.shape)} must have x_known's shape {tuple(x_known.shape)}")
    noise = randn_like_from(x_known, generator) if noise is None else noise.to(x_known)
    return torch.where(_frame_view(known.bool()), x_known, noise * sigma_max)
