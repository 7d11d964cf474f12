"""Shared setup of the two latent diffusion stages (content, motion): where latents come from.

With `data.latents=DIR` examples are read from a latent cache (`vidm data cache-latents`);
otherwise videos under `data.root` are encoded on the fly by the frozen autoencoder at
`data.autoencoder` (slower: the encoder runs every step). The autoencoder, when available
(given, or the one recorded in the cache's index), also decodes the preview samples.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import common
from .loop import Stage
from vidm.errors import ConfigError, NoVideosError


class LatentStage(Stage):
    kind = ""  # "content" | "motion"
    ae = None

    def setup_latent_source(self, clip_frames: int) -> tuple[int, int, int]:
        """Fill train_set/val_set; returns the latent shape (C, h, w)."""
        from vidm.data.latents import LatentCache, LatentFrames, split_videos

        cfg, src = self.cfg, self.src
        if cfg.data.latents:
            cache = LatentCache(cfg.data.latents)
            if len(cache) == 0:
                raise NoVideosError(f"{cfg.data.latents}: the latent cache holds no videos")
            train_ids, val_ids = split_videos(len(cache), cfg.data.val_clips)
            if clip_frames == 1:
                self.train_set, self.val_set = LatentFrames(cache, train_ids), LatentFrames(cache, val_ids)
            else:
                self.train_set = self.clip_set(cache, train_ids, clip_frames)
                self.val_set = self.clip_set(cache, val_ids, clip_frames)
            self.num_train, self.num_val = len(self.train_set), len(self.val_set)
            if self.num_train == 0:
                raise NoVideosError(f"{cfg.data.latents}: no cached video has enough frames for "
                                    f"{clip_frames}-frame windows at stride {cfg.data.stride}")
            ae_path = cfg.data.autoencoder or cache.index.get("autoencoder")
            if ae_path and Path(ae_path).is_dir():
                self.ae = common.load_autoencoder(ae_path, self.device)
            self.from_cache = True
            size = cache.index.get("size") or [cfg.data.size]
            self.latents_from = {"size": int(size[0]), "latent_scale": cache.index.get("latent_scale"),
                                 "autoencoder": cache.index.get("autoencoder_fingerprint")}
            return tuple(cache.latent_shape)
        if not cfg.data.autoencoder:
            raise ConfigError(f"{src}: set data.latents (a latent cache) or data.autoencoder "
                              f"(a model folder, to encode data.root videos on the fly)")
        self.ae = common.load_autoencoder(cfg.data.autoencoder, self.device)
        train, val = common.open_video_folder(cfg, clip_frames, src)
        with_first = clip_frames > 1
        self.train_set, self.num_train = common.VideoItems(train, with_first), len(train)
        self.val_set = common.VideoItems(val, with_first) if val is not None else None
        self.num_val = len(val) if val is not None else 0
        self.from_cache = False
        from vidm.models.pretrained import latent_fingerprint

        self.latents_from = {"size": int(cfg.data.size), "latent_scale": float(self.ae.config.latent_scale),
                             "autoencoder": latent_fingerprint(self.ae)}
        return tuple(self.ae.latent_shape(cfg.data.size, cfg.data.size))

    latents_from: dict = {}

    def clip_set(self, cache, videos: list[int], clip_frames: int):
        """The windows of `videos` of a latent cache (train/upsampler.py adds its condition)."""
        from vidm.data.latents import LatentClips

        return LatentClips(cache, videos, clip_frames, self.cfg.data.stride, self.src)

    def training_record(self) -> dict:
        """config.json's "training" section of the exported model (what `vidm pack` checks): the
        EDM sigma_data, the frame size, and the scale and autoencoder fingerprint
        (vidm.models.pretrained.latent_fingerprint) of the latents it was trained on (None
        where a latent cache older than fingerprints does not say)."""
        return {"stage": self.name, "sigma_data": float(self.cfg.diffusion.sigma_data), **self.latents_from}

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, C, h, w) -> (N, 3, H, W) in [0, 1] (latent channels without an AE)."""
        if self.ae is None:
            return common.latents_as_images(z)
        with self.accelerator.autocast():
            return common.decode(self.ae, z)

    def denoiser(self, net):
        from vidm.diffusion import Denoiser

        return Denoiser(net, sigma_data=self.cfg.diffusion.sigma_data)

    def wrap(self, net):
        return self.denoiser(net)

    def sigmas(self):
        """The preview schedule (sample_steps + 1,), float32 as the pipeline's, so a preview
        equals the pipeline's sample for the same weights, seed and settings."""
        from vidm.diffusion import get_sigmas_karras

        d = self.cfg.diffusion
        return get_sigmas_karras(d.sample_steps, d.sigma_min, d.sigma_max, device=self.device, dtype=torch.float32)
