"""Training masks for one motion model that does prediction, infilling and generation.

RaMViD (Hoeppe et al. 2022): sample which frames of a window are known (clean input, no loss)
and which are unknown (noisy input, in the loss); VIDIM (Jain et al. 2024): drop the
conditioning with some probability so classifier-free guidance on the input frames works.

Modes (one per sample, drawn with `MaskConfig` probabilities):
    prediction      first k frames known, k ~ U{1, ..., T-1}
    interpolation   first and last frame known (needs T >= 3)
    keyframes       first and last known, each interior frame known with prob 1/2, at least
                    one interior frame unknown (needs T >= 3)
    random          each frame known with prob 1/2, at least one frame unknown
    unconditional   no frame known

Conditioning dropout (`apply_conditioning_dropout`): with prob p_drop_known a sample's known
frames are dropped: they become unknown frames, noisy at the sample's sigma, and they ARE in
the loss, so such a sample is an unconditional one (RaMViD's unconditional share supervises
all frames); this is the training counterpart of `guidance.dropped_known_denoiser`.
Independently, with prob p_drop_anchor the anchor is dropped (anchor_mask False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from vidm.errors import ConfigError, ShapeError

MODES = ("prediction", "interpolation", "keyframes", "random", "unconditional")


@dataclass
class MaskConfig:
    """Mode probabilities (normalised; must not all be 0) and dropout probabilities."""

    p_prediction: float = 0.35
    p_interpolation: float = 0.3
    p_keyframes: float = 0.1
    p_random: float = 0.1
    p_unconditional: float = 0.15
    p_drop_known: float = 0.1  # VIDIM conditioning-frame dropout (guidance on input frames)
    p_drop_anchor: float = 0.1  # VIDM content-anchor dropout (anchor guidance)

    def mode_probs(self) -> torch.Tensor:
        probs = torch.tensor([self.p_prediction, self.p_interpolation, self.p_keyframes,
                              self.p_random, self.p_unconditional], dtype=torch.float64)
        if bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise ConfigError(f"MaskConfig: mode probabilities must be >= 0 and not all 0, got {probs.tolist()}")
        for name in ("p_drop_known", "p_drop_anchor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"MaskConfig: {name} must be in [0, 1], got {getattr(self, name)}")
        return probs / probs.sum()


class TrainingMasks(NamedTuple):
    known: torch.Tensor  # (B, T) bool, after conditioning dropout
    anchor_mask: torch.Tensor  # (B,) bool, False = anchor dropped
    modes: torch.Tensor  # (B,) long, index into MODES (before dropout)


def _rand(shape, generator):
    return torch.rand(shape, generator=generator, device=generator.device if generator is not None else "cpu")


def _randint(low, high, shape, generator):
    return torch.randint(low, high, shape, generator=generator,
                         device=generator.device if generator is not None else "cpu")


def _force_unknown(mask: torch.Tensor, lo: int, hi: int, generator) -> torch.Tensor:
    """Set one frame per row, uniform in [lo, hi), to unknown, so no row is fully known."""
    b, t = mask.shape
    j = _randint(lo, hi, (b,), generator)
    return mask & (torch.arange(t, device=mask.device)[None] != j[:, None])


def sample_known_mask(batch: int, T: int, generator: torch.Generator | None = None,
                      config: MaskConfig | None = None, device=None, return_modes: bool = False):
    """Known mask (B, T) bool for a batch of windows of T frames (before dropout).

    return_modes=True returns (known, modes) with modes (B,) long indices into MODES.
    Draws on the generator's device (CPU by default) and moves the result to `device`.
    """
    config = config or MaskConfig()
    probs = config.mode_probs()
    if T < 2:
        raise ShapeError(f"sample_known_mask: T must be >= 2 frames, got {T}")
    if T < 3 and float(probs[1] + probs[2]) > 0:
        raise ConfigError(
            f"sample_known_mask: interpolation/keyframes modes need T >= 3 (got T={T}); "
            "set p_interpolation = p_keyframes = 0"
        )
    dev = generator.device if generator is not None else torch.device("cpu")
    modes = torch.multinomial(probs.to(dev), batch, replacement=True, generator=generator)
    frame = torch.arange(T, device=dev)[None]  # (1, T)
    ends = (frame == 0) | (frame == T - 1)  # (1, T)

    # Every candidate is drawn for every row, so the random stream does not depend on the modes.
    k = _randint(1, T, (batch,), generator)
    prediction = frame < k[:, None]
    interpolation = ends.expand(batch, T)
    keyframes = _force_unknown(interpolation | (_rand((batch, T), generator) < 0.5), 1, max(T - 1, 2), generator)
    random = _force_unknown(_rand((batch, T), generator) < 0.5, 0, T, generator)
    unconditional = torch.zeros(batch, T, dtype=torch.bool, device=dev)

    candidates = torch.stack([prediction, interpolation, keyframes, random, unconditional])
    known = candidates[modes, torch.arange(batch, device=dev)].to(device)  # (B, T)
    return (known, modes.to(device)) if return_modes else known


def apply_conditioning_dropout(known: torch.Tensor, generator: torch.Generator | None = None,
                               p_drop_known: float = 0.1, p_drop_anchor: float = 0.1):
    """(known, anchor_mask): each sample's known frames dropped with prob p_drop_known (they
    become unknown, noisy and supervised), its anchor dropped with prob p_drop_anchor."""
    b = known.shape[0]
    drop_known = (_rand((b,), generator) < p_drop_known).to(known.device)
    anchor_mask = (_rand((b,), generator) >= p_drop_anchor).to(known.device)
    return known & ~drop_known[:, None], anchor_mask


def sample_training_masks(batch: int, T: int, generator: torch.Generator | None = None,
                          config: MaskConfig | None = None, device=None) -> TrainingMasks:
    """Modes, known mask and conditioning dropout in one call, for a motion training step."""
    config = config or MaskConfig()
    known, modes = sample_known_mask(batch, T, generator, config, device, return_modes=True)
    known, anchor_mask = apply_conditioning_dropout(
        known, generator, config.p_drop_known, config.p_drop_anchor
    )
    return TrainingMasks(known, anchor_mask, modes)
