"""The known-frame prior mean of a window: what the motion model's output is a residual of.

With `MotionUNetConfig.prior_mean = "known"` the denoiser works on the residual from

    m_t = linear interpolation in time between the nearest known frames before and after t
          (the nearest known frame where there is one on one side only; 0 with none known;
           0 at known frames themselves, which the denoiser returns as given)

i.e. D(x) = m + c_skip (x - m) + c_out F(c_in x) at unknown frames (`Denoiser`). An untrained backbone
(F = 0, zero-initialised output) then already gives the cross-fade of the end frames for
interpolation and a held last frame for prediction, instead of 0, and training spends its steps
on what moves. It fixes what the plain parameterisation got wrong at the highest noise levels,
where a little-trained denoiser was further from the truth than a plain blend of the known
frames.
"""

from __future__ import annotations

import torch

from vidm.errors import ShapeError


def nearest_known(known: torch.Tensor, times: torch.Tensor):
    """For every frame of known (B, T) bool with times (B, T) (float, any order): the nearest known
    frame at or before its time and at or after it -> (j_before, j_after) (B, T) long and their
    time distances (d_before, d_after) (B, T), inf where that side has no known frame."""
    inf = torch.tensor(float("inf"), dtype=times.dtype, device=times.device)
    dt = times[:, None, :] - times[:, :, None]  # (B, T_i, T_j): t_j - t_i
    k = known[:, None, :]
    d_after, j_after = torch.where(k & (dt >= 0), dt, inf).min(-1)  # (B, T)
    d_before, j_before = torch.where(k & (dt <= 0), -dt, inf).min(-1)
    return j_before, j_after, d_before, d_after


def known_frame_mean(x: torch.Tensor, known: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """m (B, T, C, H, W) for x (B, T, C, H, W), known (B, T) bool, times (B, T) (see the module
    docstring). Frames may come in any time order."""
    if x.ndim != 5 or known.shape != x.shape[:2] or times.shape != x.shape[:2]:
        raise ShapeError(f"known_frame_mean: need x (B, T, C, H, W) with known and times (B, T); got "
                         f"x {tuple(x.shape)}, known {tuple(known.shape)}, times {tuple(times.shape)}")
    j_before, j_after, d_before, d_after = nearest_known(known, times.to(x.dtype))
    has_after, has_before = torch.isfinite(d_after), torch.isfinite(d_before)
    # weight of the "after" frame d_before / (d_before + d_after) (an unknown frame at a known
    # frame's time gets 1/2 + 1/2 of it); one-sided: that side only; none known: 0
    both = has_after & has_before
    span = d_before + d_after
    safe = span.clamp(min=torch.finfo(x.dtype).tiny)
    w_after = torch.where(both, torch.where(span > 0, d_before / safe, 0.5), has_after.to(x.dtype))
    w_before = torch.where(both, torch.where(span > 0, d_after / safe, 0.5), has_before.to(x.dtype))
    gather = lambda j: torch.gather(x, 1, j.view(*j.shape, 1, 1, 1).expand_as(x))  # noqa: E731
    m = w_after.view(*w_after.shape, 1, 1, 1) * gather(j_after) + w_before.view(*w_before.shape, 1, 1, 1) * gather(j_before)
    return torch.where(known.view(*known.shape, 1, 1, 1), torch.zeros_like(x), m)


__all__ = ["known_frame_mean", "nearest_known"]
