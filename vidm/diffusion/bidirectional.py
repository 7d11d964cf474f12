"""Dual-directional sampling of an in-between window (Generative Inbetweening, Wang et al. 2024)
and its training-free baseline, time-reversal fusion (TRF, Feng et al. 2024): every solver step
fuses a forward-motion estimate, made from the window's start, with a backward-motion estimate,
made from its end on the window reversed in time.

    denoise = dual_direction_denoiser(forward, backward, eps, backward_anchor=z_end)
    D = denoise(x, sigma, times=times, anchor=z_start)    # a Denoiser's signature: any sampler, guidance

A call gets the window x (B, T, C, h, w) and per-frame sigma (B, T), 0 at the known frames (as
`known_frame_denoiser` passes it), and returns D (B, T, C, h, w):

- forward direction: forward(x, ...) conditioned on the known frames before the window's last
  unknown frame. For an in-between window whose only known frames are its two ends that is the
  start frame alone (a prediction mask: the end frame unknown).
- backward direction: backward(...) on the window reversed in time (frames flipped, times
  t_last - t reversed so they start at 0, anchor `backward_anchor`), conditioned the same way in
  its own order: on the known frames after the window's first unknown frame (the end frame, its
  first frame then). Its estimate is flipped back.
- a known frame that a direction does not condition on (the far end) is *hidden* from it: it
  enters noised to the current sigma, x + sigma * eps, as an unknown frame, which is what the
  model saw in training for a dropped known frame (guidance's unconditional branch treats its
  dropped frames the same way, `dropped_known_denoiser`).
- fusion: D = (D_forward + D_backward) * 0.5, the paper's average, and D = x exactly at the
  known frames (so every sampler keeps them bit-exact).

eps (B, T, C, h, w) is one fixed draw per sampling run: each frame has one eps, whichever branch
noises it (the backward direction reads it flipped). Pass the same tensor to
`guided_infill_denoiser(..., noise=eps)`, as `vidm.diffusion.sampling.sample_window_dual` does:
the guided estimate D_u + w (D_c - D_u) is then, by linearity, the average of each direction
guided on its own known frames, its unconditional branch seeing every frame noisy.

Mirror symmetry. With forward and backward the same denoiser and `rotate_maps=False` (the TRF
baseline), the fused estimate of the reversed window (reversed x, sigma, eps, times t_last - t
reversed, anchors swapped) is the reversed fused estimate, bit for bit: the two directions swap
roles and the average adds the same two tensors. A sampler run on the reversed inputs with the
reversed draws (`NoiseSource(reverse_time=True)`) therefore returns the reversed window.

rotate_maps=True (Generative Inbetweening): the backward model's temporal attention layers use
the forward pass's maps of the same call rotated by 180 degrees (`TemporalMaps.rotated()`) in
place of their own, as the paper's sampler does and as the backward fine-tune trains it
(train/backward.py). The forward model then leads and the mirror symmetry above does not hold.
"""

from __future__ import annotations

import torch

from vidm.diffusion.denoiser import broadcast_sigma
from vidm.errors import ConfigError, ShapeError


def reverse_times(times: torch.Tensor) -> torch.Tensor:
    """Frame times of the window reversed in time: (B, T) -> (B, T), t_last - t flipped, so the
    reversed window starts at 0 with the same spacings."""
    return times[:, -1:] - times.flip(1)


def leading_known(known: torch.Tensor) -> torch.Tensor:
    """The known frames a direction conditions on: known (B, T) bool -> (B, T) bool, the known
    frames before each row's last unknown frame (all of them in a row with no unknown frame).
    The backward direction applies it to the reversed mask."""
    T = known.shape[1]
    pos = torch.arange(T, device=known.device)
    last_unknown = torch.where(~known, pos, -1).amax(1, keepdim=True)  # (B, 1); -1: none unknown
    return known & ((pos < last_unknown) | (last_unknown < 0))


def _direction(denoiser, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor, cond: dict) -> torch.Tensor:
    """One direction in its own frame order: x, eps (B, T, C, h, w), sigma (B, T) with 0 at the
    known frames -> D (B, T, C, h, w), its hidden known frames noised and unknown."""
    known = sigma == 0
    hidden = known & ~leading_known(known)  # (B, T)
    level = sigma.amax(1, keepdim=True)  # (B, 1): the unknown frames' sigma
    view = hidden[:, :, None, None, None]
    x_in = torch.where(view, x + level[:, :, None, None, None] * eps.to(x.dtype), x)
    return denoiser(x_in, torch.where(hidden, level, sigma), **cond)


def dual_direction_denoiser(forward, backward, eps: torch.Tensor, *, backward_anchor: torch.Tensor | None = None,
                            rotate_maps: bool = False):
    """denoise(x, sigma, **cond) fusing both directions (see the module docstring).

    forward, backward: denoisers (e.g. `Denoiser`s of motion models) taking per-frame sigma
    (B, T) and the conditioning keywords (times, anchor, ...). eps (B, T, C, h, w): the fixed
    noise of hidden known frames. backward_anchor (B, C, h, w) or None: the anchor of the
    reversed video (its first frame: the original's last). cond must hold times (B, T).
    """
    if eps.ndim != 5:
        raise ShapeError(f"dual_direction_denoiser: eps must be (B, T, C, h, w), got {tuple(eps.shape)}")

    def denoise(x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        if x.shape != eps.shape:
            raise ShapeError(f"dual_direction_denoiser: x {tuple(x.shape)} differs from eps {tuple(eps.shape)}")
        if cond.get("times") is None:
            raise ConfigError("dual_direction_denoiser needs times= (B, T): the backward direction reverses them")
        sigma = broadcast_sigma(sigma, x)  # (B, T)
        back = {**cond, "times": reverse_times(torch.as_tensor(cond["times"], device=x.device)),
                "anchor": backward_anchor}
        fwd, maps = dict(cond), None
        if rotate_maps:
            from vidm.models.temporal_maps import TemporalMaps

            maps = TemporalMaps.record()
            fwd["temporal_maps"] = maps
        D_f = _direction(forward, x, sigma, eps, fwd)
        if maps is not None:
            back["temporal_maps"] = maps.rotated()
        D_b = _direction(backward, x.flip(1), sigma.flip(1), eps.flip(1), back).flip(1)
        fused = (D_f + D_b.to(D_f.dtype)) * 0.5
        return torch.where((sigma == 0)[:, :, None, None, None], x.to(fused.dtype), fused)

    return denoise


__all__ = ["dual_direction_denoiser", "leading_known", "reverse_times"]
