"""Where sampling and training noise comes from: seeded draws and the samplers' noise source.

Every draw is made on the generator's device and then moved, so a CPU generator drives GPU
tensors reproducibly. A stochastic sampler takes `noise_sampler`, a `NoiseSource`
(k-diffusion style): noise_sampler(x) -> N(0, I) noise of x's shape, dtype and device, already
zero wherever the mask says no noise goes (the known frames), so those elements stay bit-exact.
A source made with `reverse_time=True` hands out every draw reversed along the frame axis: the
noise a run over the time-reversed window gets, frame for frame (dual-directional sampling is
exactly mirrored by it: `vidm.diffusion.bidirectional`).
"""

from __future__ import annotations

import torch

from vidm.errors import ShapeError


def randn_like_from(x: torch.Tensor, generator: torch.Generator | None, dtype=None) -> torch.Tensor:
    """Standard normal noise with x's shape drawn on the generator's device, moved to x's."""
    return randn_from(x.shape, generator, x.device, dtype or x.dtype)


def randn_from(shape, generator: torch.Generator | None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` drawn on the generator's device (or `device` without
    one), moved to `device`."""
    draw_on = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_on, dtype=dtype).to(device)


def noise_mask_for(known: torch.Tensor) -> torch.Tensor:
    """The noise mask of a video window: known (B, T) bool -> (B, T, 1, 1, 1), True at unknown frames."""
    return (~known.bool())[:, :, None, None, None]


class NoiseSource:
    """noise(x): N(0, I) of x's shape, dtype and device from `generator`, times `mask`.

    mask: None (noise everywhere) or bool/float broadcastable to x, True/1 where noise goes.
    The full shape is drawn every call, so the random stream does not depend on the mask, and
    finite noise * 0 == 0 leaves x + noise exact where the mask is 0. reverse_time: each draw is
    flipped along dim 1 (the frames of a video x (B, T, C, H, W)) before the mask is applied.
    """

    def __init__(self, generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
                 reverse_time: bool = False):
        self.generator = generator
        self.mask = None if mask is None else torch.as_tensor(mask)
        self.reverse_time = bool(reverse_time)

    def masked(self, mask: torch.Tensor | None) -> "NoiseSource":
        """A source drawing from the same generator (and in the same time direction) with `mask`."""
        return NoiseSource(self.generator, mask, self.reverse_time)

    def check(self, x: torch.Tensor) -> "NoiseSource":
        """self, or a ShapeError when the mask does not broadcast to x."""
        if self.mask is not None:
            try:
                torch.broadcast_shapes(self.mask.shape, x.shape)
            except RuntimeError as err:
                raise ShapeError(f"noise_mask {tuple(self.mask.shape)} does not broadcast to x "
                                 f"{tuple(x.shape)}") from err
        if self.reverse_time and x.ndim != 5:
            raise ShapeError(f"a time-reversed noise source needs video x (B, T, C, H, W), got {tuple(x.shape)}")
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        noise = randn_like_from(x, self.generator)
        if self.reverse_time:
            noise = noise.flip(1)
        if self.mask is None:
            return noise
        return noise * self.mask.to(device=noise.device, dtype=noise.dtype)


def known_frame_noise(generator: torch.Generator | None, known: torch.Tensor) -> NoiseSource:
    """The noise source of a video window: noise at the unknown frames only (known (B, T) bool)."""
    return NoiseSource(generator, noise_mask_for(known))


__all__ = ["NoiseSource", "known_frame_noise", "noise_mask_for", "randn_from", "randn_like_from"]
