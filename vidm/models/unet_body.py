"""The UNet body shared by the content (2-D) and motion (factorised 3-D) backbones.

It works on frames (N, C, H, W) with a per-frame embedding (N, E) (config.modulation
"embedding") or per-frame (noise, time) coordinates (N, 2) ("positional": every ResBlock's norms
are modulated per position, vidm.models.positional). The motion backbone passes its videos
flattened as N = B*T frames plus `times` (B, T); its temporal-attention layers then mix
information across the T frames of each video. Without temporal levels this is a plain
ADM-style 2-D UNet.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from vidm.errors import ShapeError
from vidm.models.blocks import (Downsample, GroupNorm, ResBlock, SpaceTimeAttention, SpatialAttention,
                               TemporalAttention, Upsample)
from vidm.models.configs import UNetConfig
from vidm.models.embeddings import zero_module
from vidm.models.temporal_maps import TemporalMaps


class Stage(nn.ModuleList):
    """A sequence of blocks that each take what they need: ResBlock (h, emb), TemporalAttention
    (h, times, maps), the rest (h)."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, times: torch.Tensor | None,
                maps: TemporalMaps | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, TemporalAttention):
                h = layer(h, times, maps)
            else:
                h = layer(h)
        return h


class UNetBody(nn.Module):
    """conv_in -> encoder levels (ResBlocks [+ attn], Downsample) -> middle -> decoder levels with
    skip concatenation -> GroupNorm+SiLU -> conv_out (zero-init: an untrained body outputs 0).

    Space-time attention blocks live in their own `spacetime` dict, keyed by the stage they
    follow ("down3", "up1"), not inside the stages: adding them to a trained model leaves every
    existing parameter name as it was, so the old weights load into the grown model (which,
    with the new blocks' zero output layers, computes exactly what the old one did).
    """

    def __init__(self, cfg: UNetConfig, in_channels: int, out_channels: int,
                 temporal_levels: tuple[int, ...] = (), time_max_period: float = 10000.0,
                 spacetime_levels: tuple[int, ...] = ()):
        super().__init__()
        chans = cfg.level_channels()
        E, G, nres, last = cfg.emb_dim, cfg.norm_groups, cfg.num_res_blocks, len(chans) - 1
        self.temporal = bool(temporal_levels)
        self.grad_checkpointing = False

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, E, G, cfg.dropout, cfg.modulation)

        def attn(level: int, c: int) -> list[nn.Module]:
            out: list[nn.Module] = []
            if level in cfg.attn_levels:
                out.append(SpatialAttention(c, cfg.head_dim, G))
            if level in temporal_levels:
                out.append(TemporalAttention(c, cfg.head_dim, G, time_max_period))
            return out

        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        cur, skips = chans[0], [chans[0]]
        self.spacetime = nn.ModuleDict()

        def spacetime(key: str, level: int, c: int) -> None:
            if level in spacetime_levels:
                self.spacetime[key] = SpaceTimeAttention(c, cfg.head_dim, G, time_max_period)

        self.down = nn.ModuleList()
        for lv, c in enumerate(chans):
            for _ in range(nres):
                self.down.append(Stage([res(cur, c), *attn(lv, c)]))
                spacetime(f"down{len(self.down) - 1}", lv, c)
                cur = c
                skips.append(cur)
            if lv != last:
                self.down.append(Stage([Downsample(cur)]))
                skips.append(cur)

        mid: list[nn.Module] = [res(cur, cur), SpatialAttention(cur, cfg.head_dim, G)]
        if self.temporal:
            mid.append(TemporalAttention(cur, cfg.head_dim, G, time_max_period))
        mid.append(res(cur, cur))
        self.mid = Stage(mid)

        self.up = nn.ModuleList()
        for lv in reversed(range(len(chans))):
            c = chans[lv]
            for i in range(nres + 1):
                layers = [res(cur + skips.pop(), c), *attn(lv, c)]
                cur = c
                if lv != 0 and i == nres:
                    layers.append(Upsample(cur))
                else:  # after an Upsample the stage's output is at the next level's resolution
                    spacetime(f"up{len(self.up)}", lv, c)
                self.up.append(Stage(layers))
        assert not skips

        self.norm_out = GroupNorm(cur, G, act="silu")
        self.conv_out = zero_module(nn.Conv2d(cur, out_channels, 3, padding=1))
        for name, m in self.named_modules():  # the keys of their TemporalMaps entries
            if isinstance(m, TemporalAttention):
                m.map_key = name

    def _run(self, module: nn.Module, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _spacetime(self, key: str, h, times):
        return self._run(self.spacetime[key], h, times) if key in self.spacetime else h

    def forward(self, x: torch.Tensor, emb: torch.Tensor, times: torch.Tensor | None = None,
                maps: TemporalMaps | None = None) -> torch.Tensor:
        # x (N, C_in, H, W), emb (N, E) or, positional, (N, 2); times (B, T) with N = B*T
        # (temporal bodies only); maps: what the temporal attention layers do with their maps
        # (vidm.models.temporal_maps; None = the fused kernel)
        h = self.conv_in(x)
        hs = [h]
        for i, stage in enumerate(self.down):
            h = self._spacetime(f"down{i}", self._run(stage, h, emb, times, maps), times)
            hs.append(h)
        h = self._run(self.mid, h, emb, times, maps)
        for i, stage in enumerate(self.up):
            h = self._spacetime(f"up{i}", self._run(stage, torch.cat([h, hs.pop()], dim=1), emb, times, maps),
                                times)
        return self.conv_out(self.norm_out(h))


def check_spatial(h: int, w: int, factor: int, where: str) -> None:
    """Raise ShapeError unless both spatial sizes are multiples of the total downsampling factor."""
    if h % factor or w % factor or h == 0 or w == 0:
        raise ShapeError(f"{where}: spatial size {h}x{w} must be divisible by the total downsampling "
                         f"factor {factor} (height and width both multiples of {factor})")


def check_channels(c: int, expected: int, where: str) -> None:
    if c != expected:
        raise ShapeError(f"{where}: expected {expected} channels, got {c}")


__all__ = ["UNetBody", "Stage", "check_spatial", "check_channels"]
