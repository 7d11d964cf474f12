"""Train the content model (VIDM): an EDM denoiser over single latent frames.

    python -m train.content --config configs/content/tiny.yaml data.latents=cache/synth

The content model generates a video's first latent frame; any frame of the training videos is
good data for it (a cache gives every frame; videos give one random frame per video and step).
Unconditional (model.num_classes must be 0: the data carries no labels).
"""

from __future__ import annotations

import sys

import torch

from . import common
from .config import ContentTrainConfig
from .latent_stage import LatentStage
from .loop import main as loop_main
from vidm.errors import ConfigError


class ContentStage(LatentStage):
    name = "content"
    kind = "content"
    config_cls = ContentTrainConfig

    def setup(self) -> None:
        from vidm.diffusion import get_sampler
        from vidm.models.unet2d import ContentUNet

        cfg, src = self.cfg, self.src
        net_cfg = common.build_model_config("content", cfg.model, src)
        if net_cfg.num_classes:
            raise ConfigError(f"{src}: model.num_classes={net_cfg.num_classes}, but training data has no class labels")
        get_sampler(cfg.diffusion.sampler)  # an unknown sampler fails now, not at the first preview
        latent_shape = self.setup_latent_source(1)
        common.check_latent_shape(net_cfg, latent_shape, src)
        self.latent_shape = latent_shape
        torch.manual_seed(cfg.run.seed)
        self.net = ContentUNet(net_cfg).to(self.device)

    def x0_of(self, batch: dict) -> torch.Tensor:
        if self.from_cache:
            return batch["latent"]  # (B, C, h, w)
        return common.encode(self.ae, batch["video"][:, 0], self.accelerator)  # (B, C, h, w)

    def loss(self, module, batch, generator):
        from vidm.diffusion import edm_loss

        d = self.cfg.diffusion
        loss = edm_loss(module, self.x0_of(batch), None, generator, P_mean=d.P_mean, P_std=d.P_std,
                        sigma_data=d.sigma_data)
        return loss, {}

    def preview(self, net, batch, generator):
        d = self.cfg.diffusion
        real = self.decode_images(self.x0_of(batch)[: d.num_samples])
        fake = self.decode_images(self.preview_latents(net, generator))
        return [("samples", "image", torch.cat([common.image_row(fake), common.image_row(real)], dim=1))]

    def preview_latents(self, net, generator) -> torch.Tensor:
        """diffusion.num_samples first frames (N, C, h, w) from the pipeline's frame sampler
        (`vidm.diffusion.sample_frames`)."""
        from vidm.diffusion import sample_frames

        d = self.cfg.diffusion
        return sample_frames(self.denoiser(net), (d.num_samples, *self.latent_shape), self.sigmas(), d.sampler,
                             generator, device=self.device, autocast=self.accelerator.autocast)


def main(argv: list[str] | None = None) -> int:
    return loop_main(ContentStage, argv)


if __name__ == "__main__":
    sys.exit(main())
