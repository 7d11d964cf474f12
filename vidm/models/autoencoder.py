"""Frame autoencoder: a KL-regularised convolutional VAE applied to each frame on its own
(as in latent diffusion), plus helpers to move whole videos to and from scaled latents.

frames (N, 3, H, W) in [-1, 1]  --encode-->  DiagonalGaussian over (N, C, H/f, W/f)
z (N, C, H/f, W/f)              --decode-->  (N, 3, H, W)
z + references (N, K, 3, H', W') --decode-->  (N, 3, H', W')   (config.references > 0)
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
from vidm.models.mixin import PretrainedMixin
from vidm.models.reference_decoder import ReferenceDecoder
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
        # Absent on plain autoencoders, so their folders keep exactly their old weights.
        self.ref_decoder = (ReferenceDecoder(config.latent_channels, config.ref_channels, config.ref_corr_radius,
                                             config.ref_flow_prior, config.ref_warp)
                            if config.references else None)

    @property
    def max_references(self) -> int:
        return self.config.references

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

    def decode(self, z: torch.Tensor, references: torch.Tensor | None = None,
               offsets: torch.Tensor | None = None, latent_sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """z (N, C, h, w) -> (N, 3, h*f, w*f); with references (N, K, 3, H, W) in [-1, 1] (K >= 1)
        and offsets (N, K) (reference time minus target time, frames) -> (N, 3, H, W), built from
        the references' pixels. latent_sigma (scalar or (N,)): how unsure z is (0 = exact,
        inf = unknown), as in training."""
        if z.ndim != 4:
            raise ShapeError(f"AutoencoderKL.decode: z must be (N, C, h, w), got shape {tuple(z.shape)}")
        check_channels(z.shape[1], self.config.latent_channels, "AutoencoderKL.decode: z")
        x = self.decoder(z)
        if references is None or references.shape[1] == 0:
            return x
        N = z.shape[0]
        if self.ref_decoder is None:
            raise ConfigError("AutoencoderKL.decode: this autoencoder has a plain decoder; it takes no "
                              "reference frames (train one with model.references=2)")
        if references.ndim != 5 or references.shape[0] != N or references.shape[2] != 3:
            raise ShapeError(f"AutoencoderKL.decode: references must be (N={N}, K, 3, H, W), "
                             f"got shape {tuple(references.shape)}")
        K = references.shape[1]
        if K > self.config.references:
            raise ShapeError(f"AutoencoderKL.decode: {K} references given; this decoder takes at most "
                             f"{self.config.references}")
        if offsets is None or tuple(offsets.shape) != (N, K):
            got = None if offsets is None else tuple(offsets.shape)
            raise ShapeError(f"AutoencoderKL.decode: offsets must be (N={N}, K={K}), got {got}")
        sigma = torch.as_tensor(latent_sigma, dtype=torch.float32, device=z.device)
        sigma = sigma.expand(N) if sigma.ndim == 0 else sigma
        if tuple(sigma.shape) != (N,) or bool((sigma < 0).any()) or bool(sigma.isnan().any()):
            raise ShapeError(f"AutoencoderKL.decode: latent_sigma must be >= 0, a scalar or (N={N},)")
        if not bool(torch.isfinite(references).all()) or not bool(torch.isfinite(offsets).all()) \
                or not bool(torch.isfinite(z).all()):
            raise ShapeError("AutoencoderKL.decode: z, references and offsets must be finite")
        sigma = torch.where(torch.isinf(sigma), torch.full_like(sigma, 1e6), sigma)
        refs, offs, present = pad_references(references, offsets.float())
        return self.ref_decoder(z, x, refs, offs, present, sigma)

    def forward(self, frames: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct: (recon (N, 3, H, W), posterior)."""
        posterior = self.encode(frames)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z.to(frames.dtype)), posterior

    def reference_forward(self, z: torch.Tensor, refs: torch.Tensor, offsets: torch.Tensor,
                          present: torch.Tensor, latent_sigma: torch.Tensor):
        """Training entry of the reference path with per-example slots: z (N, C, h, w),
        refs (N, 2, 3, H, W), offsets / present (N, 2), latent_sigma (N,) -> (frames (N, 3, H, W),
        blend logits (N, 3, H, W))."""
        return self.ref_decoder(z, self.decoder(z), refs, offsets, present, latent_sigma, return_logits=True)


def pad_references(refs: torch.Tensor, offsets: torch.Tensor):
    """(N, K, 3, H, W), (N, K) with K <= 2 -> the decoder's two slots and their presence (N, 2)."""
    N, K = refs.shape[:2]
    present = torch.zeros(N, 2, device=refs.device)
    present[:, :K] = 1
    if K < 2:
        refs = torch.cat([refs, refs.new_zeros(N, 2 - K, *refs.shape[2:])], 1)
        offsets = torch.cat([offsets, offsets.new_zeros(N, 2 - K)], 1)
    return refs, offsets, present


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
