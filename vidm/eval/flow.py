"""Optical-flow helpers shared by the warping-error metric and the flow baseline.

OpenCV is optional (extras `eval` and `dev`), so it is imported here, lazily, and a missing
install raises a `DependencyError` that says which extra to install.

Flow convention (as OpenCV's): `flow = dis_flow(a, b)` is (H, W, 2) float32 (dx, dy) such that
a[y, x] ~ b[y + dy, x + dx]; `backward_warp(b, flow)` then rebuilds a from b.
"""

from __future__ import annotations

import numpy as np

from vidm.errors import DependencyError, ShapeError

DIS_PRESETS = ("ultrafast", "fast", "medium")


def require_cv2():
    """Import OpenCV or raise a clear error naming the extra that provides it."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DependencyError(
            "optical flow needs OpenCV: pip install 'vidm[eval]' (or opencv-python-headless)"
        ) from e
    return cv2


def _check_rgb(img: np.ndarray, name: str) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        got = getattr(img, "shape", type(img).__name__), getattr(img, "dtype", "")
        raise ShapeError(f"{name}: expected a uint8 (H, W, 3) array, got {got}")


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from RGB uint8 frame `a` to `b` -> (H, W, 2) float32."""
    cv2 = require_cv2()
    _check_rgb(a, "dis_flow a")
    _check_rgb(b, "dis_flow b")
    if a.shape != b.shape:
        raise ShapeError(f"dis_flow: frames differ in size: {a.shape} vs {b.shape}")
    if preset not in DIS_PRESETS:
        raise ShapeError(f"dis_flow preset: expected one of {DIS_PRESETS}, got {preset!r}")
    code = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }[preset]
    dis = cv2.DISOpticalFlow_create(code)
    ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
    return dis.calc(ga, gb, None)


def backward_warp(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample `img` at x + flow(x) (bilinear, border replicated).

    img: (H, W) or (H, W, C), any dtype OpenCV remaps (uint8, float32).
    Returns (warped, inside) where inside (H, W) bool says the sample point lay in the image;
    outside points are replicated border pixels, i.e. invented, and callers treat them as occluded.
    """
    cv2 = require_cv2()
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = gx + flow[..., 0]
    map_y = gy + flow[..., 1]
    warped = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def fb_occlusion(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """Occlusion mask of the forward flow by forward-backward consistency -> (H, W) bool.

    A pixel x of frame a is occluded (has no reliable match in frame b) when the backward flow at
    its match does not lead back: |f(x) + g(x + f(x))|^2 > 0.01 (|f|^2 + |g(x + f)|^2) + 0.5
    (Sundaram et al. 2010, as used by Ruder et al. 2016 and Lai et al. 2018), or when its match
    falls outside frame b.
    """
    bw_at_match, inside = backward_warp(flow_bw, flow_fw)  # g(x + f(x)), (H, W, 2)
    diff = np.sum((flow_fw + bw_at_match) ** 2, axis=-1)
    mag = np.sum(flow_fw**2, axis=-1) + np.sum(bw_at_match**2, axis=-1)
    return (diff > 0.01 * mag + 0.5) | ~inside
