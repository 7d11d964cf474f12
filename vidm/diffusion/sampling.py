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
    z = sample_window_dual(motion_denoiser, backward_denoiser, x_known, known, sigmas, "heun", generator,
                           guidance=1.5, cond=..., backward_anchor=z_end, rotate_maps=True)

`sample_window_dual` is the dual-directional path (`vidm.diffusion.bidirectional`): the same
sampler and guidance over a denoiser that fuses a forward and a backward direction; its draws,
in order: the start noise, the window's eps (known frames noised where a branch treats them as
unknown), then the sampler's and the re-injections' noise, all from one `NoiseSource`.

Noise re-injection (`reinject=M`, as in Generative Inbetweening's released sampler, which uses
M = 5 over the first half of the steps): each of the first `REINJECT_SHARE` of the steps (never
the step to sigma = 0) is followed M times by fresh noise of std sqrt(sigma_i^2 - sigma_{i+1}^2)
at the unknown frames, taking the state back to sigma_i, and the same step again. Those steps
run as one-step calls of the sampler, so a multistep sampler (dpmpp_2m) restarts its history at
each of them; the rest of the schedule runs as one call. A window costs
(S + M * reinjected_steps) steps instead of S.
"""

from __future__ import annotations

import contextlib

import torch

from vidm.diffusion.bidirectional import dual_direction_denoiser
from vidm.diffusion.guidance import guided_infill_denoiser, initial_state
from vidm.diffusion.noise import NoiseSource, known_frame_noise, noise_mask_for, randn_from
from vidm.diffusion.samplers import get_sampler
from vidm.errors import ConfigError

REINJECT_SHARE = 0.5  # the share of the solver steps that get re-injections (the paper's sampler)


def run_sampler(name: str, denoise, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSource,
                callback=None, autocast=None, reinject: int = 0,
                reinject_share: float = REINJECT_SHARE) -> torch.Tensor:
    """SAMPLERS[name](denoise, x, sigmas) with the noise source and callback, under autocast()
    (a context-manager factory, e.g. torch.autocast or accelerate's; None: none). reinject = M > 0:
    noise re-injection (module docstring), its noise from `noise_sampler` (zero at known frames)."""
    fn = get_sampler(name)
    noise_sampler.check(x)
    steps = reinjected_steps(sigmas, reinject, reinject_share)
    with (autocast or contextlib.nullcontext)():
        if not steps:
            return fn(denoise, x, sigmas, callback=callback, noise_sampler=noise_sampler)
        for i in range(steps):
            pair = sigmas[i:i + 2]  # (2,): one step, from sigma_i to sigma_{i+1} > 0
            x = fn(denoise, x, pair, callback=callback, noise_sampler=noise_sampler)
            up = (pair[0] ** 2 - pair[1] ** 2).sqrt()  # back to sigma_i
            for _ in range(reinject):
                x = x + noise_sampler(x) * up.to(x.dtype)
                x = fn(denoise, x, pair, callback=callback, noise_sampler=noise_sampler)
        if steps == len(sigmas) - 1:  # every step had its re-injections
            return x
        return fn(denoise, x, sigmas[steps:], callback=callback, noise_sampler=noise_sampler)


def reinjected_steps(sigmas: torch.Tensor, reinject: int, share: float = REINJECT_SHARE) -> int:
    """How many leading steps of `sigmas` (S + 1,) get `reinject` re-injections each: the first
    int(S * share), none of them a step to sigma = 0 (0 when reinject is 0). A ConfigError for a
    reinject that is not an integer >= 0 or a share outside [0, 1]."""
    if isinstance(reinject, bool) or not isinstance(reinject, int) or reinject < 0:
        raise ConfigError(f"reinject must be an integer >= 0, got {reinject!r}")
    if not 0.0 <= float(share) <= 1.0:
        raise ConfigError(f"reinject_share must be in [0, 1], got {share!r}")
    if reinject == 0:
        return 0
    n = len(sigmas) - 1
    k = min(int(n * float(share)), n)
    while k > 0 and not bool(sigmas[k] > 0):  # step k-1 ends at sigma 0: no noise to go back with
        k -= 1
    return k


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
                  init: torch.Tensor | None = None, callback=None, autocast=None, reinject: int = 0) -> torch.Tensor:
    """One video window (motion model) with the known frames clean (RaMViD) and guidance on them
    (VIDIM): x_known (B, T, C, h, w) with the known frames in place, known (B, T) bool ->
    (B, T, C, h, w) float32, bit-exact at the known frames.

    sigmas (S + 1,): the schedule, its first value the start noise level. init (B, T, C, h, w):
    the unknown frames start at init + sigmas[0] * noise (SDEdit-style) instead of pure noise.
    cond: the model's keyword conditioning (times, anchor) for both guidance branches.
    reinject: noise re-injections per early step (module docstring; 0 = none).
    """
    x = initial_state(x_known, known, float(sigmas[0]), generator)  # noise at the unknown frames
    if init is not None:
        x = torch.where(known[..., None, None, None], x, x + init.to(x.dtype))
    denoise = guided_infill_denoiser(denoiser, known, guidance, cond=cond, generator=generator)
    return run_sampler(sampler, denoise, x, sigmas, known_frame_noise(generator, known), callback, autocast,
                       reinject=reinject)


@torch.no_grad()
def sample_window_dual(forward, backward, x_known: torch.Tensor, known: torch.Tensor, sigmas: torch.Tensor,
                       sampler: str, generator: torch.Generator | None, guidance: float = 1.0,
                       cond: dict | None = None, *, backward_anchor: torch.Tensor | None = None,
                       rotate_maps: bool = False, init: torch.Tensor | None = None, callback=None, autocast=None,
                       reinject: int = 0, reverse_noise: bool = False) -> torch.Tensor:
    """An in-between window sampled dual-directionally (`vidm.diffusion.bidirectional`):
    x_known (B, T, C, h, w) with the known frames in place, known (B, T) bool -> (B, T, C, h, w)
    float32, bit-exact at the known frames.

    forward, backward: the two directions' denoisers (the same one for time-reversal fusion);
    cond: the forward direction's conditioning (times (B, T), anchor (B, C, h, w));
    backward_anchor (B, C, h, w): the reversed video's anchor (its first frame, the original's
    last); rotate_maps: the backward model runs on the forward model's rotated temporal attention
    maps. Guidance on the input frames applies per direction; sigmas, init, reinject as for
    `sample_window`. reverse_noise: every draw reversed along the frames, which is what makes a run
    on the reversed window (start and end swapped) the reverse of this one, when both directions
    are one denoiser without rotated maps.
    """
    draw = NoiseSource(generator, reverse_time=reverse_noise).check(x_known)
    x = initial_state(x_known, known, float(sigmas[0]), noise=draw(x_known.float()))
    if init is not None:
        x = torch.where(known[..., None, None, None], x, x + init.to(x.dtype))
    eps = draw(x)  # (B, T, C, h, w): each known frame's noise wherever a branch treats it as unknown
    fused = dual_direction_denoiser(forward, backward, eps, backward_anchor=backward_anchor, rotate_maps=rotate_maps)
    denoise = guided_infill_denoiser(fused, known, guidance, cond=cond, noise=eps)
    return run_sampler(sampler, denoise, x, sigmas, draw.masked(noise_mask_for(known)), callback, autocast,
                       reinject=reinject)


__all__ = ["REINJECT_SHARE", "reinjected_steps", "run_sampler", "sample_frames", "sample_window",
           "sample_window_dual"]
