"""vidm networks: frame autoencoder, content (2-D) and motion (factorised 3-D) UNet backbones.

    from vidm.models import build_model, get_preset
    ae = build_model("autoencoder", "tiny")            # or a config dataclass
    motion = MotionUNet.from_pretrained("runs/motion")  # config.json + model.safetensors
"""

from __future__ import annotations

from vidm import stages
from vidm.errors import ConfigError
from vidm.models.autoencoder import (AutoencoderKL, DiagonalGaussian, decode_frames, decode_video, encode_frames,
                                     encode_video, measure_latent_scale)
from vidm.models.autoencoder_loss import PatchDiscriminator, autoencoder_loss, discriminator_loss
from vidm.models.blocks import ResBlock, SpaceTimeAttention, SpatialAttention, TemporalAttention
from vidm.models.configs import AutoencoderConfig, ContentUNetConfig, MotionUNetConfig
from vidm.models.precision import autocast_dtype, cpu_has_fast_bf16
from vidm.models.presets import get_preset, preset_names
from vidm.models.pretrained import load_pretrained
from vidm.models.temporal_maps import TemporalMaps
from vidm.models.unet2d import ContentUNet
from vidm.models.unet3d import MotionUNet


def build_model(kind: str, config="tiny"):
    """A freshly initialised model of stage `kind` (vidm.stages, e.g. "motion") from a preset name
    or a config (dataclass or dict)."""
    if kind not in stages.names():
        raise ConfigError(f"unknown model kind {kind!r}; known: {sorted(stages.names())}")
    cls = stages.get(kind).model_class()
    if isinstance(config, str):
        config = get_preset(kind, config)
    elif isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    elif not isinstance(config, cls.config_class):
        raise ConfigError(f"build_model: a {kind} model needs a {cls.config_class.__name__}, "
                          f"got {type(config).__name__}")
    return cls(config)


__all__ = [
    "AutoencoderKL", "DiagonalGaussian", "encode_frames", "decode_frames", "encode_video", "decode_video",
    "measure_latent_scale", "PatchDiscriminator", "autoencoder_loss", "discriminator_loss",
    "ResBlock", "SpatialAttention", "TemporalAttention", "SpaceTimeAttention", "TemporalMaps",
    "AutoencoderConfig", "ContentUNetConfig", "MotionUNetConfig",
    "ContentUNet", "MotionUNet", "build_model", "get_preset", "preset_names",
    "load_pretrained", "autocast_dtype", "cpu_has_fast_bf16",
]
