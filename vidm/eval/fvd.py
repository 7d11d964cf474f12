"""Fréchet Video Distance (Unterthiner et al. 2018): the Fréchet distance between Gaussians fitted
to I3D logits (400-d) of real and generated videos.

Preprocessing as the reference implementation (google-research/frechet_video_distance): every
frame bilinearly resized to 224x224 (no crop, aspect ratio not kept), values scaled to [-1, 1].
Standard FVD uses 16-frame clips. Only `size=224` gives FVD proper; a smaller `size` exists for
quick code-path tests on a random network and its numbers are not comparable to anything.
FVD from few videos is biased upward (the covariance is poorly estimated); papers use >= 256
(often 2048) videos per set, so compare numbers only at equal set sizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vidm.errors import ShapeError
from vidm.eval.i3d import InceptionI3d
from vidm.eval.metrics import frechet_distance_from_features

FVD_SIZE = 224


def preprocess_for_i3d(videos, size: int = FVD_SIZE) -> torch.Tensor:
    """Videos -> I3D input (B, 3, T, size, size) float32 in [-1, 1].

    videos: uint8 (B, T, H, W, 3) (vidm's I/O layout, values 0..255), or a floating tensor
    (B, T, C, H, W) in [-1, 1] (vidm's model layout).
    """
    v = videos if isinstance(videos, torch.Tensor) else torch.from_numpy(np.asarray(videos))
    if v.ndim != 5:
        raise ShapeError(f"preprocess_for_i3d: expected a batch of videos (B, T, ...), got shape {tuple(v.shape)}")
    if v.dtype == torch.uint8:
        if v.shape[-1] != 3:
            raise ShapeError(f"preprocess_for_i3d: uint8 videos must be (B, T, H, W, 3), got {tuple(v.shape)}")
        v = rearrange(v, "b t h w c -> b t c h w").float() / 127.5 - 1.0
    elif v.is_floating_point():
        if v.shape[2] != 3:
            raise ShapeError(
                f"preprocess_for_i3d: float videos must be (B, T, 3, H, W) in [-1, 1], got {tuple(v.shape)}"
            )
        v = v.float()
    else:
        raise ShapeError(f"preprocess_for_i3d: expected uint8 or float videos, got {v.dtype}")
    b = v.shape[0]
    frames = rearrange(v, "b t c h w -> (b t) c h w")  # resize acts per frame
    if frames.shape[-2:] != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b).clamp(-1.0, 1.0)


@torch.inference_mode()
def i3d_features(
    model: InceptionI3d,
    videos,
    size: int = FVD_SIZE,
    batch_size: int = 8,
    features: str = "logits",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """I3D features of a set of videos -> float64 (B, 400) ("logits", FVD) or (B, 1024) ("pool").

    videos: as `preprocess_for_i3d`; processed `batch_size` videos at a time on the model's device
    (or `device`), so a large set never sits on the device at once.
    """
    device = device or next(model.parameters()).device
    n = len(videos)
    if n == 0:
        raise ShapeError("i3d_features: empty video set")
    out = []
    for i in range(0, n, batch_size):
        x = preprocess_for_i3d(videos[i : i + batch_size], size).to(device)
        out.append(model(x, features=features).double().cpu())
    return torch.cat(out)


def fvd(model: InceptionI3d, real, fake, size: int = FVD_SIZE, batch_size: int = 8) -> float:
    """FVD between two video sets (each >= 2 videos; layouts as `preprocess_for_i3d`)."""
    f_real = i3d_features(model, real, size, batch_size)
    f_fake = i3d_features(model, fake, size, batch_size)
    return frechet_distance_from_features(f_real, f_fake)
