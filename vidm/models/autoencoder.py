"""Frame autoencoder: a KL-regularised convolutional VAE applied to each frame on its own
(as in latent diffusion), plus helpers to move whole videos to and from scaled latents.

frames (N, 3, H, W) in [-1, 1]  --encode-->  DiagonalGaussian over (N, C, H/f, W/f)
z (N, C, H/f, W/f)              --decode-->  (N, 3, H, W)
Diffusion models work on z * config.latent_scale (about unit std; see measure_latent_scale).

With `linear_shortcut` the encoder mean and the decoder output each add a learned linear patch
code (a stride-f conv / transposed conv) beside the deep path, in the spirit of DC-AE's residual
autoencoding (Chen et al. 2024): the AE starts as a linear codec, which learns in a few dozen
steps, and the deep path (zero-initialised output) learns the residual. Without it a deep AE
sits near "mean colour" for hundreds of steps.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from vidm.errors import ConfigError, ShapeError
from vidm.models.blocks import Downsample, GroupNorm, ResBlock, SpatialAttention, Upsample
from vidm.models.configs import AutoencoderConfig
from vidm.models.embeddings import zero_module
from vidm.models.pretrained import PretrainedMixin
from vidm.models.unet_body import check_channels, check_spatial


class DiagonalGaussian:
    """Posterior q(z | x) = N(mean, exp(logvar)) from the encoder's 2C output channels."""

    def __init__(self, moments: torch.Tensor):
        # moments (N, 2C, h, w)
        self.mean, logvar = moments.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per latent element, (N, C, h, w)."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)


def _mid(c: int, cfg: AutoencoderConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [ResBlock(c, c, None, cfg.norm_groups)]
    if cfg.mid_attention:
        layers.append(SpatialAttention(c, cfg.head_dim, cfg.norm_groups))
    layers.append(ResBlock(c, c, None, cfg.norm_groups))
    return layers


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)]
        cur = chans[0]
        for lv, c in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(cur, c, None, cfg.norm_groups))
                cur = c
            if lv != len(chans) - 1:
                layers.append(Downsample(cur))
        layers += _mid(cur, cfg)
        conv_out = nn.Conv2d(cur, 2 * cfg.latent_channels, 3, padding=1)
        # Start the posterior narrow (std ~0.05): with logvar ~0 the decoder would first see
        # mostly noise and a short training run learns little (the tiny KL weight barely pulls).
        with torch.no_grad():
            conv_out.bias[cfg.latent_channels:].fill_(-6.0)
        layers += [GroupNorm(cur, cfg.norm_groups, act="silu"), conv_out]
        self.layers = nn.Sequential(*layers)
        self.latent_channels = cfg.latent_channels
        f = cfg.downsample_factor
        self.shortcut = nn.Conv2d(cfg.in_channels, cfg.latent_channels, f, stride=f) if cfg.linear_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.layers(x)  # (N, 2C, h, w): mean and logvar
        if self.shortcut is not None:  # linear patch code added to the mean only
            mean, logvar = moments.split(self.latent_channels, dim=1)
            moments = torch.cat([mean + self.shortcut(x), logvar], dim=1)
        return moments


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.ch_mult]
        cur = chans[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, cur, 3, padding=1), *_mid(cur, cfg)]
        for lv in reversed(range(len(chans))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock(cur, chans[lv], None, cfg.norm_groups))
                cur = chans[lv]
            if lv != 0:
                layers.append(Upsample(cur))
        layers.append(GroupNorm(cur, cfg.norm_groups, act="silu"))
        self.layers = nn.Sequential(*layers)
        self.conv_out = zero_module(nn.Conv2d(cur, cfg.in_channels, 3, padding=1))
        f = cfg.downsample_factor
        self.shortcut = (nn.ConvTranspose2d(cfg.latent_channels, cfg.in_channels, f, stride=f)
                         if cfg.linear_shortcut else None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.conv_out(self.layers(z))
        return out if self.shortcut is None else out + self.shortcut(z)


class AutoencoderKL(PretrainedMixin, nn.Module):
    """encode(frames (N, 3, H, W)) -> DiagonalGaussian; decode(z (N, C, h, w)) -> (N, 3, H, W).

    encode/decode work on UNSCALED latents; multiply by config.latent_scale before diffusion
    (encode_video / decode_video do this).
    """

    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def last_layer(self) -> torch.Tensor:
        """Decoder output weight (for an adaptive adversarial weight, if a training loop wants one)."""
        return self.decoder.conv_out.weight

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        check_spatial(height, width, self.downsample_factor, "AutoencoderKL")
        f = self.downsample_factor
        return (self.config.latent_channels, height // f, width // f)

    def encode(self, frames: torch.Tensor) -> DiagonalGaussian:
        if frames.ndim != 4:
            raise ShapeError(f"AutoencoderKL.encode: frames must be (N, 3, H, W), got shape {tuple(frames.shape)}")
        check_channels(frames.shape[1], self.config.in_channels, "AutoencoderKL.encode: frames")
        check_spatial(frames.shape[2], frames.shape[3], self.downsample_factor, "AutoencoderKL.encode")
        return DiagonalGaussian(self.encoder(frames))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4:
            raise ShapeError(f"AutoencoderKL.decode: z must be (N, C, h, w), got shape {tuple(z.shape)}")
        check_channels(z.shape[1], self.config.latent_channels, "AutoencoderKL.decode: z")
        return self.decoder(z)

    def forward(self, frames: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct: (recon (N, 3, H, W), posterior)."""
        posterior = self.encode(frames)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z.to(frames.dtype)), posterior


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_frames(model: AutoencoderKL, frames: torch.Tensor, chunk_size: int = 16, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> scaled latents (N, C, h, w), `chunk_size` frames at a time.

    Uses the posterior mean unless `sample`. Chunks go to the model's device; the result comes
    back on the input's device, so a long CPU video fits through a small GPU.
    """
    if chunk_size < 1:
        raise ConfigError(f"encode_frames: chunk_size must be >= 1, got {chunk_size}")
    dev = _model_device(model)
    outs = []
    for chunk in frames.split(chunk_size):
        post = model.encode(chunk.to(dev, torch.float32))
        z = post.sample(generator) if sample else post.mode()
        outs.append((z * model.config.latent_scale).to(frames.device))
    return torch.cat(outs)


@torch.no_grad()
def decode_frames(model: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 16,
                  clamp: bool = True) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> frames (N, 3, H, W) (clamped to [-1, 1] unless told not)."""
    if chunk_size < 1:
        raise ConfigError(f"decode_frames: chunk_size must be >= 1, got {chunk_size}")
    dev = _model_device(model)
    outs = []
    for chunk in latents.split(chunk_size):
        x = model.decode(chunk.to(dev, torch.float32) / model.config.latent_scale).float()
        outs.append((x.clamp(-1, 1) if clamp else x).to(latents.device))
    return torch.cat(outs)


def encode_video(model: AutoencoderKL, video: torch.Tensor, chunk_size: int = 16, sample: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T, 3, H, W) in [-1, 1] -> scaled latents (B, T, C, H/f, W/f)."""
    if video.ndim != 5:
        raise ShapeError(f"encode_video: video must be (B, T, 3, H, W), got shape {tuple(video.shape)}")
    B = video.shape[0]
    z = encode_frames(model, rearrange(video, "b t c h w -> (b t) c h w"), chunk_size, sample, generator)
    return rearrange(z, "(b t) c h w -> b t c h w", b=B)


def decode_video(model: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 16,
                 clamp: bool = True) -> torch.Tensor:
    """Scaled latents (B, T, C, h, w) -> video (B, T, 3, h*f, w*f)."""
    if latents.ndim != 5:
        raise ShapeError(f"decode_video: latents must be (B, T, C, h, w), got shape {tuple(latents.shape)}")
    B = latents.shape[0]
    x = decode_frames(model, rearrange(latents, "b t c h w -> (b t) c h w"), chunk_size, clamp)
    return rearrange(x, "(b t) c h w -> b t c h w", b=B)


@torch.no_grad()
def measure_latent_scale(model: AutoencoderKL, frames: torch.Tensor, chunk_size: int = 16) -> float:
    """Set model.config.latent_scale = 1 / std of the (posterior-mean) latents of `frames` and
    return it. frames: (N, 3, H, W) or (B, T, 3, H, W) in [-1, 1], a few hundred frames of data."""
    if frames.ndim == 5:
        frames = rearrange(frames, "b t c h w -> (b t) c h w")
    was_training = model.training
    model.eval()
    try:
        old = model.config.latent_scale
        model.config.latent_scale = 1.0
        try:
            z = encode_frames(model, frames, chunk_size)
        finally:
            model.config.latent_scale = old
    finally:
        model.train(was_training)
    std = z.float().std().item()
    if not std > 0 or not torch.isfinite(torch.tensor(std)):
        raise ConfigError(f"measure_latent_scale: latent std is {std}; cannot set latent_scale (need varied, finite frames)")
    model.config.latent_scale = 1.0 / std
    return model.config.latent_scale


__all__ = ["AutoencoderKL", "DiagonalGaussian", "Encoder", "Decoder", "encode_frames", "decode_frames",
           "encode_video", "decode_video", "measure_latent_scale"]
