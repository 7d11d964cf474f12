"""VIDIM's cascade: what the upsampler stage is conditioned on.

The base motion model makes the in-between video at its latent size; the upsampler, a motion
model at `scale` times that size (`MotionUNetConfig.low_res_scale`), makes it again at its own
size from (a) the base video, upsampled, with noise-conditioning augmentation, and (b) the
high-resolution end frames as ordinary known frames (no parameters for them).

Noise-conditioning augmentation (Ho et al., cascaded diffusion; VIDIM): the condition gets
noise at a level l in [0, 1] of a cosine schedule, whose noise-to-signal ratio at l is
tan(pi l / 2): sigma_aug = sigma_data * tan(pi l / 2), so l = 0.5 is noise as strong as the
latents themselves. Training draws l ~ U(0, aug_max) per window (VIDIM: aug_max 0.5); sampling
uses one fixed level (pipeline.json `cascade_aug`). The network is told l (an input plane),
and the noised condition is rescaled to about the latents' own spread, whatever l is:

    cond = (up(z_low) + sigma_aug * eps) / sqrt(1 + (sigma_aug / sigma_data)^2)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidm.errors import ShapeError


def aug_sigma(level, sigma_data: float) -> torch.Tensor:
    """sigma of augmentation level(s) in [0, 1): sigma_data * tan(pi * level / 2)."""
    level = torch.as_tensor(level, dtype=torch.float32)
    return float(sigma_data) * torch.tan(level * (math.pi / 2))


def upsample_latents(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Latent video (B, T, C, h, w) -> (B, T, C, scale*h, scale*w), bilinear."""
    if z.ndim != 5:
        raise ShapeError(f"upsample_latents: z must be (B, T, C, h, w), got {tuple(z.shape)}")
    B, T = z.shape[:2]
    up = F.interpolate(z.flatten(0, 1).float(), scale_factor=scale, mode="bilinear", align_corners=False)
    return up.reshape(B, T, *up.shape[1:])


def low_res_condition(z_low: torch.Tensor, scale: int, level: torch.Tensor, sigma_data: float,
                      noise: torch.Tensor) -> torch.Tensor:
    """The upsampler's low_res input: base latents z_low (B, T, C, h, w), levels (B,), noise
    (B, T, C, scale*h, scale*w) -> (B, T, C, scale*h, scale*w) (module docstring)."""
    up = upsample_latents(z_low, scale)
    if noise.shape != up.shape:
        raise ShapeError(f"low_res_condition: noise {tuple(noise.shape)} must be {tuple(up.shape)}")
    s = aug_sigma(level, sigma_data).to(up.device)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
    return (up + s * noise.to(up)) / torch.sqrt(1 + (s / sigma_data) ** 2)


__all__ = ["aug_sigma", "upsample_latents", "low_res_condition"]
