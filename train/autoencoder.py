"""Train the frame autoencoder (KL-VAE): L1 (+ L2) reconstruction + small KL.

    python -m train.autoencoder --config configs/autoencoder/tiny.yaml data.root=data/synth

A batch is `data.batch_size` clips of `data.num_frames` frames from different videos, trained
as batch_size * num_frames independent frames. Before each export the EMA model's
`latent_scale` is set to 1 / std of its latents on held-out frames, so the diffusion stages
see about unit-variance latents.

With `model.references=2` (configs/autoencoder/real.yaml) the decoder also learns to build
frames from reference frames (`vidm.models.reference_decoder`): each example is a target and 0-2
references (`references.*`: two-sided, one-sided backward, none), at S * scale pixels; the
target is encoded from its S x S copy, and the built frame is scored at full size with a
Laplacian-pyramid L1. Examples come from every decodable video under data.root, decoded once
into memory (`vidm.data.frame_bank`); data.val_root names the held-out videos.
"""

from __future__ import annotations

import sys

import torch
from einops import rearrange

from . import common
from vidm.errors import ConfigError
from .config import AutoencoderTrainConfig
from .loop import Stage, main as loop_main


class AutoencoderStage(Stage):
    name = "autoencoder"
    config_cls = AutoencoderTrainConfig

    def setup(self) -> None:
        from vidm.models.autoencoder import AutoencoderKL

        cfg, src = self.cfg, self.src
        net_cfg = common.build_model_config("autoencoder", cfg.model, src)
        if cfg.data.latents:
            raise ConfigError(f"{src}: data.latents is for the content/motion stages; the autoencoder trains on videos")
        size = cfg.data.size
        f = net_cfg.downsample_factor
        if size % f:
            raise ConfigError(f"{src}: data.size={size} is not divisible by the autoencoder's downsample factor {f}")
        self.with_refs = net_cfg.references > 0
        if self.with_refs:
            self._setup_reference_data()
        else:
            if cfg.data.val_root:
                raise ConfigError(f"{src}: data.val_root is for reference autoencoders (model.references=2); "
                                  f"plain ones hold out data.val_clips")
            train, val = common.open_video_folder(cfg, cfg.data.num_frames, src)
            self.train_set, self.num_train = common.VideoItems(train), len(train)
            self.val_set = common.VideoItems(val) if val is not None else None
            self.num_val = len(val) if val is not None else 0
        torch.manual_seed(cfg.run.seed)
        self.net = AutoencoderKL(net_cfg).to(self.device)

    def _setup_reference_data(self) -> None:
        from vidm.data.frame_bank import FrameBank, ReferenceExamples
        from vidm.errors import VidmError

        cfg, src = self.cfg, self.src
        if not cfg.data.root:
            raise ConfigError(f"{src}: data.root (a folder of videos) is not set")
        try:
            cfg.references.validate("references")
            lc = cfg.loss
            if not (0 <= lc.p_latent_clean and 0 <= lc.p_latent_drop and lc.p_latent_clean + lc.p_latent_drop <= 1):
                raise ConfigError("loss.p_latent_clean + loss.p_latent_drop must lie in [0, 1]")
            if not lc.latent_sigma_max > 0.05:
                raise ConfigError(f"loss.latent_sigma_max must be > 0.05, got {lc.latent_sigma_max}")
            progress = self.accelerator.is_main_process
            train = FrameBank(cfg.data.root, cfg.data.max_short_side, progress=progress)
            val = FrameBank(cfg.data.val_root, cfg.data.max_short_side, progress=progress) if cfg.data.val_root else None
        except VidmError as e:
            raise ConfigError(f"{src}: {e}") from None
        if self.accelerator.is_main_process:
            held = f"; held out: {', '.join(val.names)}" if val else ""
            print(f"train.autoencoder: {len(train)} videos, {train.num_frames} frames in memory{held}",
                  file=sys.stderr)
        self.train_set, self.num_train = ReferenceExamples(train, cfg.data.size, cfg.references), len(train)
        self.val_set = ReferenceExamples(val, cfg.data.size, cfg.references) if val else None
        self.num_val = len(val) if val else 0

    def wrap(self, net):
        return ReferenceStep(net, self.cfg) if self.with_refs else net

    @property
    def samples_per_item(self) -> int:  # throughput is counted in frames
        return 1 if self.with_refs else self.cfg.data.num_frames

    def model_config(self) -> dict:
        d = self.net.config.to_dict()
        d.pop("latent_scale", None)  # measured at export; not part of the architecture
        return d

    def frames_of(self, batch: dict) -> torch.Tensor:
        if self.with_refs:  # the targets' S x S copies
            return target_copies(batch, self.cfg.data.size)
        return rearrange(batch["video"], "b t c h w -> (b t) c h w")  # (N, 3, H, W)

    def loss(self, module, batch, generator):
        from vidm.models.autoencoder_loss import autoencoder_loss

        if self.with_refs:
            return module(batch, generator)

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
        if self.with_refs:
            return reference_preview(net, batch, self.cfg.data.size, self.accelerator)
        frames = self.frames_of(batch)[:8]
        with self.accelerator.autocast():
            recon = net.decode(net.encode(frames).mean.to(frames.dtype))
        top = common.image_row((frames.float().clamp(-1, 1) + 1) / 2)
        bottom = common.image_row((recon.float().clamp(-1, 1) + 1) / 2)
        return [("reconstruction", "image", torch.cat([top, bottom], dim=1))]

    def before_export(self, net) -> None:
        """Set latent_scale = 1 / latent std on up to 256 fixed frames (held-out ones first).
        With the encoder frozen (run.trainable) the latents are those of run.init_from, whose
        scale other models were trained with: keep it."""
        from vidm.models.autoencoder import measure_latent_scale

        if self.cfg.run.init_from and not any(p.requires_grad for p in self.net.encoder.parameters()):
            from vidm.serialization import read_json

            meta = read_json(f"{self.cfg.run.init_from}/config.json")
            net.config.latent_scale = float(meta["config"].get("latent_scale", 1.0))
            return

        if getattr(self, "_scale_frames", None) is None:
            sets = [(self.val_set, self.num_val), (self.train_set, self.num_train)]
            frames, per = [], self.cfg.data.num_frames
            for ds, n in sets:
                for i in range(n):
                    if len(frames) * per >= 256:
                        break
                    item = ds[(i, 4242 + i)]
                    frames.append(target_copies(self.collate([item]), self.cfg.data.size)
                                  if self.with_refs else item["video"])
            self._scale_frames = torch.cat(frames)[:256].to(self.device)  # (N, 3, H, W)
        with self.accelerator.autocast():
            measure_latent_scale(net, self._scale_frames)


def target_copies(batch: dict, size: int) -> torch.Tensor:
    """The targets of a reference batch at the model grid: (B, 3, size, size)."""
    from vidm.models.warp import resize

    out = []
    for i, m in enumerate(batch["scale"]):
        P = size * int(m)
        out.append(resize(batch["frames"][i : i + 1, 0, :, :P, :P], (size, size)))
    return torch.cat(out)


class ReferenceStep(torch.nn.Module):
    """One reference-autoencoder loss as a module (so DDP sees a forward): the targets are
    encoded at S; no-reference examples train the plain decoder at S; the others go through
    the reference decoder at their own size S * scale, grouped by scale, with the latent clean,
    noised or dropped (its sigma given to the network)."""

    def __init__(self, net, cfg):
        super().__init__()
        self.net, self.cfg = net, cfg

    def forward(self, batch: dict, generator: torch.Generator):
        from vidm.models.warp import laplacian_l1

        lc, S = self.cfg.loss, self.cfg.data.size
        frames = batch["frames"]  # (B, 3, 3, Pmax, Pmax): target, ref slot 0, ref slot 1
        B = frames.shape[0]
        target_s = target_copies(batch, S)
        g = common.device_generator(generator, frames.device)
        posterior = self.net.encode(target_s)
        z = posterior.sample(g).to(frames.dtype)
        kl = posterior.kl().mean()
        has_ref = batch["present"].sum(1) > 0
        scales = torch.as_tensor(batch["scale"], device=frames.device)
        total = lc.kl * kl
        logs = {"kl": float(kl.detach())}
        plain = ~has_ref
        if bool(plain.any()):
            err = self.net.decode(z[plain]).float() - target_s[plain].float()
            l1 = err.abs().mean()
            part = lc.l1 * l1 + (lc.l2 * err.square().mean() if lc.l2 else 0.0)
            total = total + part * (plain.float().mean())
            logs["l1_plain"] = float(l1.detach())
        # Latent seen by the reference path: clean / noised (sigma x latent std) / dropped.
        u = torch.rand(B, generator=g, device=frames.device)
        lo, hi = torch.log(torch.tensor(0.05)), torch.log(torch.tensor(lc.latent_sigma_max))
        sig = torch.exp(lo + (hi - lo) * torch.rand(B, generator=g, device=frames.device))
        sig = torch.where(u < lc.p_latent_clean, torch.zeros_like(sig), sig)
        drop = u >= 1 - lc.p_latent_drop
        eps = torch.randn(z.shape, generator=g, device=z.device, dtype=z.dtype)
        std = z.detach().float().std().clamp(min=1e-3)
        z_ref = z + (sig * std).view(B, 1, 1, 1).to(z.dtype) * eps
        z_ref = torch.where(drop.view(B, 1, 1, 1), torch.zeros_like(z_ref), z_ref)
        sig = torch.where(drop, torch.full_like(sig, 1e6), sig)
        ref_loss, n_ref = 0.0, int(has_ref.sum())
        for m in sorted(set(int(v) for v in scales[has_ref].tolist())):
            sel = has_ref & (scales == m)
            P = S * m
            out, logits = self.net.reference_forward(z_ref[sel], frames[sel, 1:, :, :P, :P],
                                                     batch["offsets"][sel], batch["present"][sel], sig[sel])
            tgt = frames[sel, 0, :, :P, :P]
            lap = laplacian_l1(out, tgt)
            err = out.float() - tgt.float()
            l1 = err.abs().mean()
            # keeps blend logits near the range where the softmax still learns (|l| ~ 10 costs 0.01)
            part = lc.laplacian * lap + lc.l1 * l1 + lc.logit_l2 * logits.square().mean()
            if lc.l2:  # squared error: what PSNR scores; L1 prefers the sharp guess where unsure
                part = part + lc.l2 * err.square().mean()
            ref_loss = ref_loss + part * (int(sel.sum()) / B)
            logs[f"l1_ref_x{m}"] = float(l1.detach())
            logs["logit_rms"] = float(logits.detach().square().mean().sqrt())
        total = total + ref_loss
        if n_ref:
            logs["ref_frac"] = n_ref / B
        return total, logs


@torch.no_grad()
def reference_preview(net, batch, size: int, accelerator):
    """Rows: reference 0, target, built frame, reference 1 (examples with two references)."""
    from vidm.models.warp import resize

    two = (batch["present"].sum(1) == 2).nonzero().flatten()[:6].tolist()
    if not two:
        return []
    cols = []
    for i in two:
        P = size * int(batch["scale"][i])
        f = batch["frames"][i : i + 1, :, :, :P, :P]
        with accelerator.autocast():
            z = net.encode(resize(f[:, 0], (size, size))).mean
            out = net.decode(z.to(f.dtype), f[:, 1:], batch["offsets"][i : i + 1]).float()
        col = torch.cat([f[0, 1], f[0, 0], out[0].clamp(-1, 1), f[0, 2]], 1)  # (3, 4P, P)
        cols.append(resize(col[None], (4 * 128, 128))[0])
    grid = torch.cat(cols, 2)
    return [("references", "image", (grid.float() + 1) / 2)]


def main(argv: list[str] | None = None) -> int:
    return loop_main(AutoencoderStage, argv)


if __name__ == "__main__":
    sys.exit(main())
