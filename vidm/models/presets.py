"""Named model presets: get_preset(stage, name) -> a fresh config dataclass.

One table per stage kind below; the stage registry (vidm.stages) says which table is whose.
name in {"tiny", "base"}.
- tiny: trains in CPU minutes on 64x64 video. AE 4x down -> latents (4, 16, 16).
- base: one GPU, 256x256 video. AE 8x down -> latents (4, 32, 32).
The UNet presets assume 4 latent channels (the AE presets' latent_channels).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from vidm import stages
from vidm.errors import ConfigError
from vidm.models.configs import AutoencoderConfig, ContentUNetConfig, MotionUNetConfig

AUTOENCODER: dict[str, Callable[[], AutoencoderConfig]] = {
    # 0.68 M params; 64x64 -> 16x16x4. Narrow (16 ch) at full resolution: that level
    # dominates the cost (0.7 GFLOP per 64x64 frame for encode + decode).
    "tiny": lambda: AutoencoderConfig(downsample_factor=4, base_channels=16, ch_mult=(1, 2, 4),
                                      num_res_blocks=1, norm_groups=8, head_dim=64),
    # 21 M params; 256x256 -> 32x32x4
    "base": lambda: AutoencoderConfig(downsample_factor=8, base_channels=64, ch_mult=(1, 2, 4, 4),
                                      num_res_blocks=2, norm_groups=32, head_dim=64),
}
CONTENT: dict[str, Callable[[], ContentUNetConfig]] = {
    # 1.5 M params over 16x16x4 latents
    "tiny": lambda: ContentUNetConfig(model_channels=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                                      attn_levels=(1, 2), head_dim=32, norm_groups=8),
    # 105 M params over 32x32x4 latents
    "base": lambda: ContentUNetConfig(model_channels=128, ch_mult=(1, 2, 3, 4), num_res_blocks=2,
                                      attn_levels=(1, 2, 3), head_dim=64, norm_groups=32),
}
MOTION: dict[str, Callable[[], MotionUNetConfig]] = {
    # 2.4 M params over windows of 16x16x4 latent frames
    "tiny": lambda: MotionUNetConfig(model_channels=32, ch_mult=(1, 2, 2), num_res_blocks=2,
                                     attn_levels=(1, 2), temporal_levels=(0, 1, 2), head_dim=32,
                                     norm_groups=8),
    # 118 M params over windows of 32x32x4 latent frames
    "base": lambda: MotionUNetConfig(model_channels=128, ch_mult=(1, 2, 3, 4), num_res_blocks=2,
                                     attn_levels=(1, 2, 3), temporal_levels=(0, 1, 2, 3), head_dim=64,
                                     norm_groups=32),
}

# VIDIM cascade upsamplers: the motion presets at twice the base latent size (one more input
# channel group: vidm.models.unet3d). Usually started from a trained motion model's weights.
UPSAMPLER: dict[str, Callable[[], MotionUNetConfig]] = {
    name: (lambda make=make: dataclasses.replace(make(), low_res_scale=2)) for name, make in MOTION.items()
}


def preset_names(kind: str) -> list[str]:
    return sorted(_table(kind))


def get_preset(kind: str, name: str):
    """A new config for preset `name` of stage `kind` (e.g. "motion"), with config.preset = name."""
    table = _table(kind)
    if name not in table:
        raise ConfigError(f"unknown {kind} preset {name!r}; known: {sorted(table)}")
    cfg = table[name]()
    cfg.preset = name
    return cfg


def _table(kind: str) -> dict:
    if kind not in stages.names():
        raise ConfigError(f"unknown model kind {kind!r}; known: {sorted(stages.names())}")
    return stages.get(kind).preset_table()


__all__ = ["AUTOENCODER", "CONTENT", "MOTION", "UPSAMPLER", "get_preset", "preset_names"]
