"""Motion backbone: a factorised 3-D UNet over a window of T latent frames (VIDM motion model
with RaMViD / VIDIM conditioning).

Per frame, the input channels are
    [frame (C) | known mask (1) | content anchor (C) | anchor-present (1)]      -> 2C + 2
The frame is clean where known, noisy elsewhere (the `Denoiser` decides); the anchor is the
video's first latent frame broadcast to every frame (zeros, with anchor-present = 0, when it is
dropped for guidance or absent). Each frame gets its own noise embedding (c_noise (B, T)) plus a
learned "known" embedding, and its real-valued time enters through the temporal attention's
positional encoding. With config.modulation "positional" (VIDM's PosGN) there are no
embeddings: each frame's noise level and time (scaled within the window) are coordinates of the
ResBlocks' per-position modulation, beside y and x (the known mask is an input channel).
Spatial convs/attention work per frame; temporal attention mixes frames.

An upsampler (VIDIM's cascade stage, config.low_res_scale = k >= 2) has C + 1 more input
channels per frame and nothing else: [... | low_res (C) | aug_level (1)], the base model's
video upsampled k times and noise-augmented (`vidm.diffusion.cascade`) and that augmentation's
level as a constant plane. Its high-resolution end frames are ordinary known frames.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange, repeat

from vidm.errors import ConfigError, ShapeError
from vidm.models.configs import MotionUNetConfig
from vidm.models.embeddings import NoiseEmbedding
from vidm.models.positional import frame_coordinates
from vidm.models.mixin import PretrainedMixin
from vidm.models.temporal_maps import TemporalMaps
from vidm.models.unet_body import UNetBody, check_channels, check_spatial


class MotionUNet(PretrainedMixin, nn.Module):
    """forward(x, c_noise, known, times, anchor=None, anchor_mask=None, temporal_maps=None)
    -> (B, T, C, h, w).

    x (B, T, C, h, w); c_noise (B, T) (or (B,) for one level for all frames); known (B, T) bool;
    times (B, T) float frame positions (any spacing; use frame units with the anchor at 0);
    anchor (B, C, h, w) or None; anchor_mask (B,) bool, False = anchor dropped for that sample.
    temporal_maps: a `vidm.models.temporal_maps.TemporalMaps` to record every temporal attention
    layer's maps (B*h'*w', heads, T, T) at its own resolution h' x w', or to run the layers on
    given ones; None (the default) = the fused attention kernel. Works for any T >= 1.
    """

    config_class = MotionUNetConfig

    def __init__(self, config: MotionUNetConfig):
        super().__init__()
        self.config = config
        C = config.in_channels
        self.noise_embed = self.known_embed = None
        if config.modulation == "embedding":
            self.noise_embed = NoiseEmbedding(config.model_channels, config.emb_dim)
            self.known_embed = nn.Embedding(2, config.emb_dim)  # row 0 = unknown, row 1 = known
            nn.init.normal_(self.known_embed.weight, std=0.1)
        self.body = UNetBody(config, self.input_channels(config), C, temporal_levels=config.temporal_levels,
                             time_max_period=config.time_max_period, spacetime_levels=config.spacetime_levels)

    @staticmethod
    def input_channels(config: MotionUNetConfig) -> int:
        """Channels per frame into the body: 2C + 2, plus C + 1 for an upsampler."""
        C = config.in_channels
        return 2 * C + 2 + (C + 1 if config.low_res_scale else 0)

    @property
    def is_upsampler(self) -> bool:
        return self.config.low_res_scale > 0

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, known: torch.Tensor, times: torch.Tensor,
                anchor: torch.Tensor | None = None, anchor_mask: torch.Tensor | None = None,
                temporal_maps: TemporalMaps | None = None, low_res: torch.Tensor | None = None,
                aug_level: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 5:
            raise ShapeError(f"MotionUNet: x must be (B, T, C, h, w), got shape {tuple(x.shape)}")
        B, T, C, h, w = x.shape
        check_channels(C, cfg.in_channels, "MotionUNet: x")
        check_spatial(h, w, cfg.downsample_factor, "MotionUNet")
        dev = x.device
        # Samplers may keep float64 state: compute in the weights' dtype (autocast still applies).
        x = x.to(self.body.conv_in.weight.dtype)
        c_noise = torch.as_tensor(c_noise, device=dev)
        if c_noise.ndim == 1 and c_noise.shape[0] == B:
            c_noise = c_noise[:, None].expand(B, T)
        for name, t in (("c_noise", c_noise), ("known", known), ("times", times)):
            if tuple(t.shape) != (B, T):
                raise ShapeError(f"MotionUNet: {name} must be (B, T) = ({B}, {T}), got {tuple(t.shape)}")
        known = known.to(device=dev, dtype=torch.bool)
        times = times.to(device=dev, dtype=torch.float32)

        present = torch.zeros(B, dtype=torch.bool, device=dev)
        if anchor is None:
            anchor = x.new_zeros(B, C, h, w)
        else:
            if tuple(anchor.shape) != (B, C, h, w):
                raise ShapeError(f"MotionUNet: anchor must be (B, C, h, w) = {(B, C, h, w)}, "
                                 f"got {tuple(anchor.shape)}")
            present = torch.ones(B, dtype=torch.bool, device=dev)
            if anchor_mask is not None:
                if tuple(anchor_mask.shape) != (B,):
                    raise ShapeError(f"MotionUNet: anchor_mask must be (B,) = ({B},), got {tuple(anchor_mask.shape)}")
                present = anchor_mask.to(device=dev, dtype=torch.bool)
            # Dropped anchors become exact zeros (where, not multiply: no NaN/inf leaks through).
            anchor = torch.where(present[:, None, None, None], anchor.to(x.dtype), torch.zeros_like(x[:, 0]))

        known_ch = repeat(known.to(x.dtype), "b t -> b t 1 h w", h=h, w=w)
        anchor_ch = repeat(anchor, "b c h w -> b t c h w", t=T)
        present_ch = repeat(present.to(x.dtype), "b -> b t 1 h w", t=T, h=h, w=w)
        parts = [x, known_ch, anchor_ch, present_ch]  # (B, T, 2C+2, h, w) together
        if self.is_upsampler:
            parts += self._low_res_channels(low_res, aug_level, B, T, C, h, w, x.dtype)
        elif low_res is not None or aug_level is not None:
            raise ShapeError("MotionUNet: low_res / aug_level are an upsampler's inputs (config.low_res_scale > 0)")
        inp = torch.cat(parts, dim=2)  # (B, T, input_channels, h, w)

        if self.noise_embed is None:  # positional: per-frame (noise, time) coordinates (B*T, 2)
            emb = frame_coordinates(c_noise, times)
        else:
            emb = self.noise_embed(c_noise.reshape(-1)) + self.known_embed(known.reshape(-1).long())  # (B*T, E)
        out = self.body(rearrange(inp, "b t c h w -> (b t) c h w"), emb, times, temporal_maps)
        return rearrange(out, "(b t) c h w -> b t c h w", b=B)

    def _low_res_channels(self, low_res, aug_level, B, T, C, h, w, dtype) -> list[torch.Tensor]:
        """[low_res (B, T, C, h, w), the level plane (B, T, 1, h, w)] of an upsampler's input."""
        if low_res is None or aug_level is None:
            raise ShapeError("MotionUNet: an upsampler needs low_res (B, T, C, h, w) and aug_level (B,)")
        if tuple(low_res.shape) != (B, T, C, h, w):
            raise ShapeError(f"MotionUNet: low_res must be (B, T, C, h, w) = {(B, T, C, h, w)}, "
                             f"got {tuple(low_res.shape)}")
        aug_level = torch.as_tensor(aug_level, device=low_res.device)
        if tuple(aug_level.shape) != (B,):
            raise ShapeError(f"MotionUNet: aug_level must be (B,) = ({B},), got {tuple(aug_level.shape)}")
        plane = aug_level.to(dtype)[:, None, None, None, None].expand(B, T, 1, h, w)
        return [low_res.to(dtype), plane]

    @classmethod
    def upsampler_from(cls, motion: "MotionUNet", config: MotionUNetConfig | int) -> "MotionUNet":
        """An upsampler that starts as the motion model `motion`: `config` (an upsampler config, or
        just its low_res_scale for motion's own architecture at that scale) may differ from
        motion's in low_res_scale and spacetime_levels only. Every weight of motion that the
        upsampler has is copied; the input conv's new low_res / level channels start at zero and
        blocks motion lacks keep their initialisation (their zero output layers add nothing), so
        with the same spacetime_levels it first computes exactly what `motion` does."""
        import dataclasses

        if motion.is_upsampler:
            raise ConfigError("the model to start the upsampler from is already an upsampler")
        if isinstance(config, int):
            config = dataclasses.replace(motion.config, low_res_scale=config)
        if not config.low_res_scale:
            raise ConfigError("an upsampler config needs low_res_scale >= 2")
        same = lambda c: dataclasses.replace(c, low_res_scale=0, spacetime_levels=(), preset=None).to_dict()  # noqa: E731
        diff = sorted(k for k, v in same(config).items() if same(motion.config).get(k) != v)
        if diff:
            raise ConfigError(f"the motion model differs from the upsampler's architecture in {', '.join(diff)}")
        net = cls(config)
        ours = net.state_dict()
        for k, v in motion.state_dict().items():
            if k == "body.conv_in.weight":
                ours[k] = torch.zeros_like(ours[k])
                ours[k][:, :v.shape[1]] = v
            elif k in ours and ours[k].shape == v.shape:
                ours[k] = v.clone()
        net.load_state_dict(ours)
        return net


__all__ = ["MotionUNet"]
