"""Train the motion model (VIDM + RaMViD + VIDIM): an EDM denoiser over windows of T latent
frames with random known-frame masks, conditioning dropout, a content anchor and frame times.

    python -m train.motion --config configs/motion/tiny.yaml data.latents=cache/synth

Per example: a random window of `data.num_frames` latent frames (stride from `data.stride`),
`times` = the frames' positions in the window (first frame at 0, in source-frame units), `anchor` = the
video's first latent frame (what the content model generates). Per step, masks from
`vidm.diffusion.sample_training_masks` (prediction / interpolation / keyframes / random /
unconditional) with VIDIM dropout of the known frames and of the anchor; the EDM loss covers
the unknown frames only. The preview is an interpolation: first and last frame given.
"""

from __future__ import annotations

import sys

import torch
from einops import rearrange

from . import common
from .config import MotionTrainConfig
from .latent_stage import LatentStage
from .loop import main as loop_main
from vidm.errors import ConfigError, VidmError


class MotionStage(LatentStage):
    name = "motion"
    kind = "motion"
    config_cls = MotionTrainConfig

    def setup(self) -> None:
        from vidm.diffusion import get_sampler
        from vidm.models.unet3d import MotionUNet

        cfg, src = self.cfg, self.src
        net_cfg = common.build_model_config(self.name, cfg.model, src)  # motion or upsampler
        T = cfg.data.num_frames
        if T < 2:
            raise ConfigError(f"{src}: data.num_frames must be >= 2 for the motion model, got {T}")
        try:
            cfg.mask.mode_probs()
            if T < 3 and (cfg.mask.p_interpolation or cfg.mask.p_keyframes):
                raise ConfigError("interpolation/keyframes masks need data.num_frames >= 3")
        except VidmError as e:
            raise ConfigError(f"{src}: mask: {e}") from None
        get_sampler(cfg.diffusion.sampler)
        if not 0.0 <= cfg.diffusion.p_splat_start <= 1.0:
            raise ConfigError(f"{src}: diffusion.p_splat_start must be in [0, 1], got {cfg.diffusion.p_splat_start}")
        latent_shape = self.setup_latent_source(T)
        common.check_latent_shape(net_cfg, latent_shape, src)
        self.latent_shape = latent_shape
        torch.manual_seed(cfg.run.seed)
        self.net = MotionUNet(net_cfg).to(self.device)

    def training_record(self) -> dict:
        """Besides the latent stage's record: the window (frames per training clip), the frame
        stride(s) and the longest time span of a window, `(window - 1) * max stride` (model times
        are source-frame positions, so one output frame per source frame is frame_step 1)."""
        d = self.cfg.data
        stride = list(d.stride) if isinstance(d.stride, (list, tuple)) else int(d.stride)
        stride_max = max(stride) if isinstance(stride, list) else stride
        return {**super().training_record(), "window": int(d.num_frames), "stride": stride,
                "max_span": float((d.num_frames - 1) * stride_max), "frame_step": 1.0}

    def latents_of(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0 (B, T, C, h, w), anchor (B, C, h, w), times (B, T))."""
        if self.from_cache:
            return batch["latents"], batch["anchor"], batch["times"]
        video = batch["video"]  # (B, T, 3, H, W)
        B = video.shape[0]
        frames = torch.cat([rearrange(video, "b t c h w -> (b t) c h w"), batch["first_frame"]])
        z = common.encode(self.ae, frames, self.accelerator)  # (B*T + B, C, h, w)
        x0 = rearrange(z[:-B], "(b t) c h w -> b t c h w", b=B)
        return x0, z[-B:], batch["times"]

    def loss(self, module, batch, generator):
        from vidm.diffusion import edm_loss, sample_training_masks

        d = self.cfg.diffusion
        x0, anchor, times = self.latents_of(batch)
        B, T = x0.shape[:2]
        masks = sample_training_masks(B, T, generator, self.cfg.mask, device=x0.device)
        start, n_splat = (None, 0) if not d.p_splat_start else splat_starts(x0, masks.known, times,
                                                                           d.p_splat_start, generator)
        loss = edm_loss(module, x0, masks.known, generator, P_mean=d.P_mean, P_std=d.P_std,
                        sigma_data=d.sigma_data, start=start, times=times, anchor=anchor,
                        anchor_mask=masks.anchor_mask, **self.condition(batch, B, generator))
        return loss, {"known_frac": float(masks.known.float().mean()), "splat_frac": n_splat / B}

    def preview(self, net, batch, generator):
        """Interpolation of held-out windows: first and last frame known, the rest sampled."""
        return [("interpolation", "video", self.preview_video(*self.preview_latents(net, batch, generator)))]

    def preview_video(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Latent windows x0 (truth) and z (sample), each (B, T, C, h, w), decoded into one video
        (T, 3, 2H, B*W): each frame shows every sample, ground truth above the sample."""
        B = x0.shape[0]
        real = self.decode_images(rearrange(x0, "b t c h w -> (b t) c h w"))
        fake = self.decode_images(rearrange(z, "b t c h w -> (b t) c h w"))
        real = rearrange(real, "(b t) c h w -> t c h (b w)", b=B)
        fake = rearrange(fake, "(b t) c h w -> t c h (b w)", b=B)
        return torch.cat([real, fake], dim=2)

    def preview_latents(self, net, batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, sample), each (B, T, C, h, w), B = diffusion.num_samples: the pipeline's window
        sampler (`vidm.diffusion.sample_window`, no guidance) on the first B windows."""
        from vidm.diffusion import sample_window

        d = self.cfg.diffusion
        x0, anchor, times = self.latents_of(batch)
        n = min(d.num_samples, x0.shape[0])
        x0, anchor, times = x0[:n], anchor[:n], times[:n]
        known = torch.zeros(x0.shape[:2], dtype=torch.bool, device=x0.device)
        known[:, 0] = known[:, -1] = True
        cond = {"times": times, "anchor": anchor, **self.condition(batch, n, generator, preview=True)}
        z = sample_window(self.denoiser(net), x0, known, self.sigmas(), d.sampler, generator, cond=cond,
                          autocast=self.accelerator.autocast)
        return x0, z

    def condition(self, batch: dict, n: int, generator, preview: bool = False) -> dict:
        """Extra keyword conditioning of the network for the first n windows of `batch` (none
        here; the cascade upsampler's low-resolution video, train/upsampler.py)."""
        return {}


def splat_starts(x0: torch.Tensor, known: torch.Tensor, times: torch.Tensor, p: float,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, int]:
    """Per window (x0 (B, T, C, h, w), known and times (B, T)): with probability p, where every
    unknown frame has known frames on both sides, x0 + u (m - x0) with m the splat start of those
    frames and u ~ U(0, 1) (the states a sampler passes through from m to its answer); else x0.
    Returns (start (B, T, C, h, w), how many windows got a splat start)."""
    from vidm.diffusion.splat import brackets, splat_window_mean

    B = x0.shape[0]
    draw = torch.rand(B, 2, generator=generator, device=generator.device if generator is not None else "cpu")
    start, n = x0.clone(), 0
    with torch.no_grad():
        for b in range(B):
            if float(draw[b, 0]) >= p or bool(known[b].all()) or brackets(known[b], times[b]) is None:
                continue
            m = splat_window_mean(x0[b:b + 1].float(), known[b], times[b]).to(x0.dtype)
            start[b] = x0[b] + float(draw[b, 1]) * (m[0] - x0[b])
            n += 1
    return start, n


def main(argv: list[str] | None = None) -> int:
    return loop_main(MotionStage, argv)


if __name__ == "__main__":
    sys.exit(main())
