"""Train the frame autoencoder (KL-VAE): L1 (+ L2) reconstruction + small KL.

    python -m train.autoencoder --config configs/autoencoder/tiny.yaml data.root=data/synth

A batch is `data.batch_size` clips of `data.num_frames` frames from different videos, trained
as batch_size * num_frames independent frames. Before each export the EMA model's
`latent_scale` is set to 1 / std of its latents on held-out frames, so the diffusion stages
see about unit-variance latents.
"""

from __future__ import annotations

import sys

import torch
from einops import rearrange

from train import common
from vidm.errors import ConfigError
from train.config import AutoencoderTrainConfig
from train.loop import Stage, main as loop_main


class AutoencoderStage(Stage):
    name = "autoencoder"
    config_cls = AutoencoderTrainConfig

    def setup(self) -> None:
        from vidm.models.autoencoder import AutoencoderKL

        cfg, src = self.cfg, self.src
        net_cfg = common.build_model_config("autoencoder", cfg.model, src)
        if cfg.data.latents:
            raise ConfigError(f"{src}: data.latents is for the content/motion stages; the autoencoder trains on videos")
        train, val = common.open_video_folder(cfg, cfg.data.num_frames, src)
        size = cfg.data.size
        f = net_cfg.downsample_factor
        if size % f:
            raise ConfigError(f"{src}: data.size={size} is not divisible by the autoencoder's downsample factor {f}")
        torch.manual_seed(cfg.run.seed)
        self.net = AutoencoderKL(net_cfg).to(self.device)
        self.train_set, self.num_train = common.VideoItems(train), len(train)
        self.val_set = common.VideoItems(val) if val is not None else None
        self.num_val = len(val) if val is not None else 0

    @property
    def samples_per_item(self) -> int:  # throughput is counted in frames
        return self.cfg.data.num_frames

    def model_config(self) -> dict:
        d = self.net.config.to_dict()
        d.pop("latent_scale", None)  # measured at export; not part of the architecture
        return d

    def frames_of(self, batch: dict) -> torch.Tensor:
        return rearrange(batch["video"], "b t c h w -> (b t) c h w")  # (N, 3, H, W)

    def loss(self, module, batch, generator):
        from vidm.models.autoencoder_loss import autoencoder_loss

        frames = self.frames_of(batch)
        # The posterior sample is drawn on the frames' device.
        g = common.device_generator(generator, frames.device)
        recon, posterior = module(frames, sample_posterior=True, generator=g)
        terms = autoencoder_loss(frames, recon, posterior, kl_weight=self.cfg.loss.kl)
        loss = self.cfg.loss.l1 * terms["l1"] + self.cfg.loss.kl * terms["kl"]
        if self.cfg.loss.l2:
            loss = loss + self.cfg.loss.l2 * (frames.float() - recon.float()).square().mean()
        return loss, {"l1": float(terms["l1"].detach()), "kl": float(terms["kl"].detach())}

    def preview(self, net, batch, generator):
        frames = self.frames_of(batch)[:8]
        with self.accelerator.autocast():
            recon = net.decode(net.encode(frames).mean.to(frames.dtype))
        top = common.image_row((frames.float().clamp(-1, 1) + 1) / 2)
        bottom = common.image_row((recon.float().clamp(-1, 1) + 1) / 2)
        return [("reconstruction", "image", torch.cat([top, bottom], dim=1))]

    def before_export(self, net) -> None:
        """Set latent_scale = 1 / latent std on up to 256 fixed frames (held-out ones first)."""
        from vidm.models.autoencoder import measure_latent_scale

        if getattr(self, "_scale_frames", None) is None:
            sets = [(self.val_set, self.num_val), (self.train_set, self.num_train)]
            frames, per = [], self.cfg.data.num_frames
            for ds, n in sets:
                for i in range(n):
                    if len(frames) * per >= 256:
                        break
                    frames.append(ds[(i, 4242 + i)]["video"])
            self._scale_frames = torch.cat(frames)[:256].to(self.device)  # (N, 3, H, W)
        with self.accelerator.autocast():
            measure_latent_scale(net, self._scale_frames)


def main(argv: list[str] | None = None) -> int:
    return loop_main(AutoencoderStage, argv)


if __name__ == "__main__":
    sys.exit(main())
