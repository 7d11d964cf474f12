"""Train the cascade upsampler (VIDIM): a motion model at `model.low_res_scale` times the base
latent size that remakes a window conditioned on the base-size video of the same frames.

    vidm data cache-latents --autoencoder AE --data VIDEOS --size 128 --out cache/hi
    vidm data cache-latents --autoencoder AE --data VIDEOS --size 64 --out cache/lo
    python -m train.upsampler --config configs/upsampler/tiny.yaml data.latents=cache/hi \
        data.low_latents=cache/lo cascade.init_from_motion=runs/motion-tiny/model

Per example: a window of data.latents (the target, e.g. 32x32 latents of 128x128 frames) and
the same frames from data.low_latents (16x16 latents of the same frames at 64x64). The base
window is upsampled and noise-augmented at a level drawn from U(0, cascade.aug_max) per window
(`vidm.diffusion.cascade`), and given with its level as extra input channels; the known
frames of the masks (motion's: interpolation, prediction, ...) are the target's own frames,
so the high-resolution end frames condition it with no parameters of their own. Everything
else is the motion model's training (train/motion.py). cascade.init_from_motion starts it from
a trained motion model, its input conv widened with zeros (`MotionUNet.upsampler_from`).
"""

from __future__ import annotations

import sys

import torch

from . import common
from .config import UpsamplerTrainConfig
from .loop import main as loop_main
from .motion import MotionStage
from vidm.errors import ConfigError


class UpsamplerStage(MotionStage):
    name = "upsampler"
    kind = "motion"
    config_cls = UpsamplerTrainConfig

    def setup(self) -> None:
        from vidm.data.latents import LatentCache
        cfg, src = self.cfg, self.src
        if not cfg.data.latents or not cfg.data.low_latents:
            raise ConfigError(f"{src}: the upsampler trains on two latent caches of the same videos: set "
                              f"data.latents (its own size) and data.low_latents (the base model's size)")
        a = cfg.cascade.aug_max
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a < 1:
            raise ConfigError(f"{src}: cascade.aug_max must be a number in [0, 1), got {a!r}")
        self.low = LatentCache(cfg.data.low_latents)
        net_cfg = common.build_model_config("upsampler", cfg.model, src)
        if net_cfg.low_res_scale < 2:
            raise ConfigError(f"{src}: model.low_res_scale must be >= 2 for an upsampler, got {net_cfg.low_res_scale}")
        super().setup()  # the motion model's checks, data (self.clip_set: paired windows), a fresh net
        C, H, W = self.latent_shape
        c, h, w = self.low.latent_shape
        k = net_cfg.low_res_scale
        if (c, h * k, w * k) != (C, H, W):
            raise ConfigError(f"{src}: data.low_latents are {c}x{h}x{w} latents; an upsampler of scale {k} to "
                              f"data.latents' {C}x{H}x{W} needs {C}x{H // k}x{W // k}")
        self.scale = k
        if cfg.cascade.init_from_motion:
            self.net = _from_motion(cfg.cascade.init_from_motion, net_cfg, src).to(self.device)

    def clip_set(self, cache, videos, clip_frames):
        from vidm.data.latents import PairedLatentClips

        return PairedLatentClips(cache, self.low, videos, clip_frames, self.cfg.data.stride, self.src)

    def training_record(self) -> dict:
        """The motion record (its size is the upsampler's own frame size) plus the base size."""
        low = self.low.index.get("size") or [None]
        return {**super().training_record(), "base_size": low[0]}

    def condition(self, batch: dict, n: int, generator, preview: bool = False) -> dict:
        """low_res (n, T, C, H, W): the base windows batch["low"] upsampled and augmented at a level
        ~ U(0, cascade.aug_max) per window (the sampling default for previews); aug_level (n,)."""
        from vidm.diffusion.cascade import low_res_condition
        from vidm.diffusion.noise import randn_from
        from vidm.pipeline.config import PipelineConfig

        low = batch["low"][:n]
        dev = low.device
        if preview:
            level = torch.full((n,), PipelineConfig().cascade_aug, device=dev)
        else:
            level = torch.rand(n, generator=generator, device=generator.device).to(dev) * self.cfg.cascade.aug_max
        k = self.scale
        shape = (*low.shape[:3], low.shape[3] * k, low.shape[4] * k)
        noise = randn_from(shape, generator, dev)
        return {"low_res": low_res_condition(low, k, level, self.cfg.diffusion.sigma_data, noise),
                "aug_level": level}


def _from_motion(path: str, net_cfg, src: str):
    """The upsampler started from the motion model at `path` (`MotionUNet.upsampler_from`), or a
    one-line ConfigError."""
    from vidm.errors import VidmError
    from vidm.models.unet3d import MotionUNet

    try:
        return MotionUNet.upsampler_from(MotionUNet.from_pretrained(path), net_cfg)
    except VidmError as e:
        raise ConfigError(f"{src}: cascade.init_from_motion: {path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    return loop_main(UpsamplerStage, argv)


if __name__ == "__main__":
    sys.exit(main())
