"""Autoencoder training losses: L1 reconstruction + small-weight KL + optional patch-GAN (hinge).

Pieces for the training loop:
    recon, posterior = ae(frames, generator=g)
    terms = autoencoder_loss(frames, recon, posterior, discriminator=disc, step=step)
    terms["loss"].backward()            # AE step (also leaves grads on disc: zero them next)
    if disc is not None and step >= disc_start:
        d = discriminator_loss(disc, frames, recon)   # uses recon.detach()
        d["d_loss"].backward()          # discriminator step
The adversarial terms are 0 before `disc_start` (the GAN only refines a working AE).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidm.models.autoencoder import DiagonalGaussian
from vidm.models.blocks import GroupNorm


class PatchDiscriminator(nn.Module):
    """pix2pix-style N-layer PatchGAN: one real/fake logit per overlapping patch (N, 1, h', w').
    GroupNorm (through kernels.group_norm) instead of BatchNorm, so batch size does not matter."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, norm_groups: int = 8):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        cur = channels
        for i in range(1, num_layers + 1):
            nxt = channels * min(2 ** i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(cur, nxt, 4, stride=stride, padding=1, bias=False),
                       GroupNorm(nxt, norm_groups), nn.LeakyReLU(0.2)]
            cur = nxt
        layers.append(nn.Conv2d(cur, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def autoencoder_loss(frames: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian, *,
                     kl_weight: float = 1e-6, discriminator: nn.Module | None = None,
                     disc_weight: float = 0.1, disc_start: int = 0, step: int = 0) -> dict[str, torch.Tensor]:
    """Generator-side loss terms (all scalars): l1, kl (mean per latent element), g_adv, loss.

    loss = l1 + kl_weight * kl + disc_weight * g_adv, with g_adv = -mean(D(recon)) once
    step >= disc_start and a discriminator is given, else 0.
    """
    l1 = (frames.float() - recon.float()).abs().mean()
    kl = posterior.kl().mean()
    g_adv = l1.new_zeros(())
    if discriminator is not None and step >= disc_start:
        g_adv = -discriminator(recon).float().mean()
    loss = l1 + kl_weight * kl + disc_weight * g_adv
    return {"loss": loss, "l1": l1, "kl": kl, "g_adv": g_adv}


def discriminator_loss(discriminator: nn.Module, frames: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hinge loss for the discriminator: d_loss, plus mean logits on real and fake for logging."""
    logits_real = discriminator(frames).float()
    logits_fake = discriminator(recon.detach()).float()
    d_loss = 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    return {"d_loss": d_loss, "logits_real": logits_real.mean().detach(), "logits_fake": logits_fake.mean().detach()}


__all__ = ["PatchDiscriminator", "autoencoder_loss", "discriminator_loss"]
