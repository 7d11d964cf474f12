"""The one sampling path: first frames (content model) and video windows (motion model).

The pipeline (`VideoPipeline.sample_first_frames` / `sample_window`, hence every public
method and the evaluations), the training previews (train/content.py, train/motion.py) all
sample through these functions, so a preview and the pipeline give the same latents for the
same weights, seed and settings. Random draws, in order: the start noise, then whatever the
denoiser draws on its first call (the guidance branch's fixed eps), then the sampler's own
noise, all from `generator` (on its device, moved to the state's).

    sigmas = get_sigmas_karras(steps, sigma_min, sigma_max, dtype=torch.float32)
    z0 = sample_frames(content_denoiser, (N, C, h, w), sigmas, "heun", generator)
    z = sample_window(motion_denoiser, x_known, known, sigmas, "heun", generator, guidance=1.5,
                      cond={"times": times, "anchor": anchor})    # known frames bit-exact
"""

from __future__ import annotations

import contextlib

import torch

from vidm.diffusion.guidance import guided_infill_denoiser, initial_state
from vidm.diffusion.noise import NoiseSource, known_frame_noise, randn_from
from vidm.diffusion.samplers import get_sampler


def run_sampler(name: str, denoise, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSource,
                callback=None, autocast=None) -> torch.Tensor:
    """SAMPLERS[name](denoise, x, sigmas) with the noise source and callback, under autocast()
    (a context-manager factory, e.g. torch.autocast or accelerate's; None: none)."""
    fn = get_sampler(name)
    noise_sampler.check(x)
    with (autocast or contextlib.nullcontext)():
        return fn(denoise, x, sigmas, callback=callback, noise_sampler=noise_sampler)


@torch.no_grad()
def sample_frames(denoiser, shape: tuple[int, ...], sigmas: torch.Tensor, sampler: str,
                  generator: torch.Generator | None, cond: dict | None = None, device=None,
                  callback=None, autocast=None) -> torch.Tensor:
    """Frames from pure noise (content model): `shape` = (N, C, h, w) -> (N, C, h, w) float32.

    denoiser(x, sigma, **cond) -> D_x (e.g. a `Denoiser`); sigmas (S + 1,) from sigmas[0] to 0.
    """
    x = randn_from(shape, generator, device) * sigmas[0]
    cond = cond or {}
    denoise = lambda x, s: denoiser(x, s, **cond)  # noqa: E731
    return run_sampler(sampler, denoise, x, sigmas, NoiseSource(generator), callback, autocast)


@torch.no_grad()
def sample_window(denoiser, x_known: torch.Tensor, known: torch.Tensor, sigmas: torch.Tensor, sampler: str,
                  generator: torch.Generator | None, guidance: float = 1.0, cond: dict | None = None,
                  init: torch.Tensor | None = None, callback=None, autocast=None) -> torch.Tensor:
    """One video window (motion model) with the known frames clean (RaMViD) and guidance on them
    (VIDIM): x_known (B, T, C, h, w) with the known frames in place, known (B, T) bool ->
    (B, T, C, h, w) float32, bit-exact at the known frames.

    sigmas (S + 1,): the schedule, its first value the start noise level. init (B, T, C, h, w):
    the unknown frames start at init + sigmas[0] * noise (SDEdit-style) instead of pure noise.
    cond: the model's keyword conditioning (times, anchor) for both guidance branches.
    """
    x = initial_state(x_known, known, float(sigmas[0]), generator)  # noise at the unknown frames
    if init is not None:
        x = torch.where(known[..., None, None, None], x, x + init.to(x.dtype))
    denoise = guided_infill_denoiser(denoiser, known, guidance, cond=cond, generator=generator)
    return run_sampler(sampler, denoise, x, sigmas, known_frame_noise(generator, known), callback, autocast)


__all__ = ["run_sampler", "sample_frames", "sample_window"]
