"""Frame and video metrics, batched in torch (float64 for the arithmetic).

Image layout: channels last by default, `(..., H, W, C)` as at vidm's I/O boundary (uint8 frames
(T, H, W, 3)); pass `channel_axis=-3` for the model layout `(..., C, H, W)`. Every leading dim is a
batch dim: per-image results come back with shape `x.shape[:-3]`; `reduction="mean"` averages them.

`data_range` is the span of the pixel values: 255 for uint8 (the default for uint8 input), 1.0
for [0, 1] floats, 2.0 for [-1, 1] floats. Float input must state it (no guessing).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vidm.errors import ConfigError, ShapeError


# ---------------------------------------------------------------------------------------------
# input handling


def _to_bchw(x, channel_axis: int, name: str) -> torch.Tensor:
    """Any (..., H, W, C) / (..., C, H, W) array -> float64 (N, C, H, W)."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim < 3:
        raise ShapeError(f"{name}: expected images (..., H, W, C) or (..., C, H, W), got shape {tuple(t.shape)}")
    if channel_axis not in (-1, -3):
        raise ConfigError(f"{name}: channel_axis must be -1 (channels last) or -3, got {channel_axis}")
    t = t.detach().to(torch.float64)
    if channel_axis == -1:
        t = t.movedim(-1, -3)
    return t.reshape(-1, *t.shape[-3:])


def _resolve_range(x, data_range: float | None, name: str) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise ConfigError(f"{name}: data_range must be > 0, got {data_range}")
        return float(data_range)
    dtype = x.dtype
    if dtype in (np.uint8, torch.uint8):
        return 255.0
    raise ConfigError(
        f"{name}: data_range is required for {dtype} images (255 for uint8, 1.0 for [0,1], 2.0 for [-1,1])"
    )


def _prepare(x, y, data_range, channel_axis, name):
    if tuple(x.shape) != tuple(y.shape):
        raise ShapeError(f"{name}: images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    dr = _resolve_range(x, data_range, name)
    batch_shape = tuple(x.shape[:-3])
    return _to_bchw(x, channel_axis, name), _to_bchw(y, channel_axis, name), dr, batch_shape


def _reduce(per_image: torch.Tensor, batch_shape: tuple, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image.reshape(batch_shape)
    if reduction == "mean":
        return per_image.mean()
    raise ConfigError(f"reduction must be 'none' or 'mean', got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM


def psnr(x, y, data_range: float | None = None, channel_axis: int = -1, reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: 10 log10(data_range^2 / MSE).

    MSE is over all pixels and channels of one image; identical images give +inf. Video PSNR is
    the mean of per-frame PSNRs (the usual convention in frame-interpolation papers).
    """
    x, y, dr, batch_shape = _prepare(x, y, data_range, channel_axis, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(1)  # (N,)
    return _reduce(10.0 * torch.log10(dr**2 / mse), batch_shape, reduction)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """1-D normalised Gaussian taps, radius int(truncate * sigma + 0.5) as scipy.ndimage (11 taps at 1.5)."""
    r = int(truncate * sigma + 0.5)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    return g / g.sum()


def ssim(
    x,
    y,
    data_range: float | None = None,
    channel_axis: int = -1,
    reduction: str = "none",
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), per image, mean over channels.

    Gaussian window (11x11, sigma 1.5), population (co)variances, K1 0.01, K2 0.03: the same
    numbers as scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1, data_range=...)`. scikit-image filters with
    reflected borders and then crops the window radius off the SSIM map, so only 'valid'
    positions count; a valid convolution here gives the same map without any padding.
    """
    x, y, dr, batch_shape = _prepare(x, y, data_range, channel_axis, "ssim")
    n, c, h, w = x.shape
    g = gaussian_window(sigma).to(x.device)
    size = g.numel()
    if h < size or w < size:
        raise ShapeError(f"ssim: images must be at least {size}x{size}, got {h}x{w}")
    C1, C2 = (K1 * dr) ** 2, (K2 * dr) ** 2

    def blur(z: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H-2r, W-2r), separable
        z = z.reshape(n * c, 1, *z.shape[-2:])
        z = F.conv2d(z, g.view(1, 1, 1, size))
        z = F.conv2d(z, g.view(1, 1, size, 1))
        return z.reshape(n, c, *z.shape[-2:])

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov_xy = blur(x * y) - mu_x * mu_y
    S = ((2 * mu_x * mu_y + C1) * (2 * cov_xy + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return _reduce(S.flatten(1).mean(1), batch_shape, reduction)


# ---------------------------------------------------------------------------------------------
# temporal consistency


def warping_error(frames: np.ndarray, reference: np.ndarray | None = None, preset: str = "medium") -> torch.Tensor:
    """Temporal warping error per consecutive frame pair -> float64 (T-1,).

    Definition (after Lai et al. 2018, "Learning Blind Video Temporal Consistency", with mean
    absolute instead of squared error): for each t, DIS optical flow f from frame t to t+1 and
    g from t+1 to t are estimated on `reference` (the ground-truth video, when there is one) or
    else on `frames` itself; frame t+1 of `frames` is warped back to t along f; pixels that fail
    the forward-backward consistency check (occluded or leaving the image) are masked out; the
    error is the mean |frames[t] - warp(frames[t+1])| over unmasked pixels and channels, in [0, 1]
    intensity units (uint8 / 255). Lower is more consistent. A pair with every pixel masked
    gives NaN. Needs OpenCV.

    frames, reference: uint8 (T, H, W, 3), T >= 2.
    """
    from vidm.eval.flow import backward_warp, dis_flow, fb_occlusion

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ShapeError(f"warping_error frames: expected uint8 (T>=2, H, W, 3), got {frames.dtype} {frames.shape}")
    ref = frames if reference is None else np.asarray(reference)
    if ref.shape != frames.shape or ref.dtype != np.uint8:
        raise ShapeError(f"warping_error reference: expected uint8 {frames.shape}, got {ref.dtype} {ref.shape}")
    errs = []
    for t in range(frames.shape[0] - 1):
        f = dis_flow(ref[t], ref[t + 1], preset)
        g = dis_flow(ref[t + 1], ref[t], preset)
        valid = ~fb_occlusion(f, g)  # (H, W)
        warped, _ = backward_warp(frames[t + 1].astype(np.float32), f)
        diff = np.abs(frames[t].astype(np.float32) - warped).mean(-1) / 255.0  # (H, W)
        errs.append(float(diff[valid].mean()) if valid.any() else math.nan)
    return torch.tensor(errs, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Fréchet distance


def _as_f64(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.detach().to(torch.float64)


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features -> mean (D,) and sample covariance (D, D) (ddof=1, as numpy.cov), float64."""
    f = _as_f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ShapeError(f"feature_statistics: expected (N>=2, D) features, got {tuple(f.shape)}")
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


def sqrtm_psd(A: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix via eigh.

    Eigenvalues below 0 (rounding noise on rank-deficient covariances) are clamped to 0, so the
    result is always real; no complex detour as with a general sqrtm.
    """
    A = 0.5 * (A + A.T)
    evals, evecs = torch.linalg.eigh(A)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1), N(mu2, sigma2), in float64.

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).
    S1 S2 is not symmetric, but it is similar to the symmetric PSD M = S1^(1/2) S2 S1^(1/2)
    (same eigenvalues), so Tr((S1 S2)^(1/2)) = sum sqrt(eig(M)): two symmetric eigendecompositions,
    stable on singular covariances (fewer samples than dims), where scipy's sqrtm may need an
    epsilon and return complex noise. Tiny negative results from rounding are clipped to 0.
    """
    mu1, mu2, sigma1, sigma2 = map(_as_f64, (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ShapeError(
            f"frechet_distance: mismatched statistics mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
            f"sigma {tuple(sigma1.shape)}/{tuple(sigma2.shape)}"
        )
    s1h = sqrtm_psd(sigma1)
    M = s1h @ sigma2 @ s1h
    tr_covmean = torch.linalg.eigvalsh(0.5 * (M + M.T)).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(float(d2), 0.0)


def frechet_distance_from_features(features1, features2) -> float:
    """Fréchet distance between two (N, D) feature sets (N may differ between the sets)."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    return frechet_distance(mu1, s1, mu2, s2)
