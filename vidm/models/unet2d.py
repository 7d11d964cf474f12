"""Content backbone: a 2-D UNet over single latent frames (VIDM's content model, p(z_0)).

The EDM `Denoiser` calls it as net(c_in * x, c_noise, class_labels=...) and owns all sigma
algebra; this module only sees c_noise (= ln(sigma) / 4). With config.modulation "positional"
c_noise reaches the ResBlocks only as a coordinate of PosGN (frame time 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vidm.errors import ConfigError, ShapeError
from vidm.models.configs import ContentUNetConfig
from vidm.models.embeddings import NoiseEmbedding
from vidm.models.positional import frame_coordinates
from vidm.models.mixin import PretrainedMixin
from vidm.models.unet_body import UNetBody, check_channels, check_spatial


class ContentUNet(PretrainedMixin, nn.Module):
    """forward(x (B, C, h, w), c_noise (B,), class_labels (B,) long or None) -> (B, C, h, w).

    With num_classes > 0, label `num_classes` means "dropped" (the unconditional branch used for
    classifier-free guidance); class_labels=None is the same as all dropped.
    """

    config_class = ContentUNetConfig

    def __init__(self, config: ContentUNetConfig):
        super().__init__()
        self.config = config
        positional = config.modulation == "positional"  # no per-sample embedding (and no labels)
        self.noise_embed = None if positional else NoiseEmbedding(config.model_channels, config.emb_dim)
        # +1 row: the "dropped" label.
        self.label_embed = (nn.Embedding(config.num_classes + 1, config.emb_dim)
                            if config.num_classes > 0 else None)
        self.body = UNetBody(config, config.in_channels, config.in_channels)

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4:
            raise ShapeError(f"ContentUNet: x must be (B, C, h, w), got shape {tuple(x.shape)}")
        B, C, h, w = x.shape
        check_channels(C, cfg.in_channels, "ContentUNet: x")
        check_spatial(h, w, cfg.downsample_factor, "ContentUNet")
        # Samplers may keep float64 state: compute in the weights' dtype (autocast still applies).
        x = x.to(self.body.conv_in.weight.dtype)
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        if c_noise.shape != (B,):
            raise ShapeError(f"ContentUNet: c_noise must be (B,) = ({B},), got {tuple(c_noise.shape)}")
        if self.noise_embed is None:  # positional
            if class_labels is not None:
                raise ConfigError("ContentUNet: class_labels given but the model is unconditional (num_classes=0)")
            return self.body(x, frame_coordinates(c_noise))  # (B, 2)
        emb = self.noise_embed(c_noise)  # (B, E)
        if self.label_embed is not None:
            if class_labels is None:
                class_labels = torch.full((B,), self.null_label, dtype=torch.long, device=x.device)
            if class_labels.shape != (B,):
                raise ShapeError(f"ContentUNet: class_labels must be (B,) = ({B},), got {tuple(class_labels.shape)}")
            if class_labels.min() < 0 or class_labels.max() > cfg.num_classes:
                raise ConfigError(f"ContentUNet: class_labels must be in [0, {cfg.num_classes}] "
                                  f"({cfg.num_classes} = dropped)")
            emb = emb + self.label_embed(class_labels.long())
        elif class_labels is not None:
            raise ConfigError("ContentUNet: class_labels given but the model is unconditional (num_classes=0)")
        return self.body(x, emb)


__all__ = ["ContentUNet"]
