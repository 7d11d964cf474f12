"""PSNR / SSIM against scikit-image, Fréchet distance against a float64 scipy reference,
warping error on videos with known consistency."""

import numpy as np
import pytest
import torch

from vidm.errors import ConfigError, ShapeError
from vidm.eval.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    psnr,
    sqrtm_psd,
    ssim,
    warping_error,
)

skm = pytest.importorskip("skimage.metrics")


def _pair(rng, shape, dtype=np.uint8):
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.normal(0, 25, shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    return a, b


def test_psnr_ssim_match_skimage_uint8():
    rng = np.random.default_rng(0)
    a, b = _pair(rng, (3, 40, 48, 3))  # (T, H, W, 3)
    p = psnr(a, b)
    s = ssim(a, b)
    assert p.shape == (3,) and s.shape == (3,)
    for t in range(3):
        ref_p = skm.peak_signal_noise_ratio(a[t], b[t], data_range=255)
        ref_s = skm.structural_similarity(
            a[t], b[t], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
        )
        assert abs(p[t].item() - ref_p) < 1e-3
        assert abs(s[t].item() - ref_s) < 1e-3
    assert abs(psnr(a, b, reduction="mean").item() - p.mean().item()) < 1e-9


def test_ssim_float_model_layout_matches_skimage():
    # Floats in [-1, 1] in the model layout (B, T, C, H, W): data_range 2, channel_axis=-3.
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 2, 3, 24, 20))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1)
    s = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float(), data_range=2.0, channel_axis=-3)
    p = psnr(torch.from_numpy(x), torch.from_numpy(y), data_range=2.0, channel_axis=-3)
    assert s.shape == (2, 2) and p.shape == (2, 2)
    xi, yi = np.moveaxis(x[1, 0], 0, -1), np.moveaxis(y[1, 0], 0, -1)
    ref_s = skm.structural_similarity(
        xi, yi, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=2.0
    )
    assert abs(s[1, 0].item() - ref_s) < 1e-3
    assert abs(p[1, 0].item() - skm.peak_signal_noise_ratio(xi, yi, data_range=2.0)) < 1e-3


def test_metric_input_errors():
    a = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ConfigError, match="data_range"):
        psnr(a, a)  # float images must state their range
    with pytest.raises(ShapeError, match="differ"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))
    with pytest.raises(ShapeError, match="11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    assert ssim(np.full((16, 16, 3), 7, np.uint8), np.full((16, 16, 3), 7, np.uint8)).item() == pytest.approx(1.0)


def _scipy_frechet(f1, f2):
    linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(200, 64))
    mix = np.eye(64) + 0.3 * rng.normal(size=(64, 64)) / 8
    f2 = rng.normal(size=(250, 64)) @ mix * 1.2 + 0.1
    ours = frechet_distance_from_features(torch.from_numpy(f1).float(), f2)  # torch or numpy, any float
    ref = _scipy_frechet(f1.astype(np.float32).astype(np.float64), f2)
    assert ref > 1.0
    assert abs(ours - ref) < 1e-6 * max(1.0, ref)


def test_frechet_distance_identical_and_singular():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(200, 64))
    assert frechet_distance_from_features(f, f) < 1e-8
    # Fewer samples than dimensions: rank-deficient covariances stay real, finite and >= 0.
    g = rng.normal(size=(10, 64))
    h = rng.normal(size=(12, 64)) + 0.5
    assert frechet_distance_from_features(g, g) < 1e-8
    d = frechet_distance_from_features(g, h)
    assert np.isfinite(d) and d > 64 * 0.25  # the mean shift alone gives 64 * 0.5^2
    mu, sigma = feature_statistics(f)
    assert torch.allclose(sigma, torch.from_numpy(np.cov(f, rowvar=False)))
    root = sqrtm_psd(sigma)
    assert torch.allclose(root @ root, sigma, atol=1e-10)
    with pytest.raises(ShapeError):
        frechet_distance(mu, sigma, mu[:3], sigma)


def _texture(rng, h, w):
    cv2 = pytest.importorskip("cv2")
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)


def test_warping_error_consistent_vs_flickering():
    rng = np.random.default_rng(2)
    tex = _texture(rng, 64, 96)
    video = np.stack([tex[:, 2 * t : 2 * t + 48] for t in range(4)])  # smooth pan, (T, H, W, 3)
    flicker = video.copy()
    flicker[1::2] = np.clip(flicker[1::2].astype(int) + 40, 0, 255).astype(np.uint8)  # brightness jumps
    e_pan = warping_error(video)
    e_flicker = warping_error(flicker, reference=video)
    assert e_pan.shape == (3,)
    assert e_pan.max() < 0.02  # a pan is explained by the flow
    assert e_flicker.min() > 0.1  # 40/255 per pixel, flow taken from the clean reference
    with pytest.raises(ShapeError):
        warping_error(video[:1])
