"""Optical-flow helpers shared by the warping-error metric, the flow baseline and the reference
decoder's flow prior (`vidm.models.flow_prior`).

OpenCV is a core dependency; it is imported here, lazily, and a broken install raises a
`DependencyError` that says what to install.

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
            "optical flow needs OpenCV: pip install opencv-python-headless"
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
    map_x, map_y, inside = sample_points(flow)
    warped = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, inside


def sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """flow (H, W, 2) -> the sample points x + flow(x) as (map_x, map_y) float32 (H, W) and
    inside (H, W) bool: whether each lies in the image."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = gx + flow[..., 0]
    map_y = gy + flow[..., 1]
    return map_x, map_y, (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)


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


def project_flows(F01, F10, O0, O1, E0, E1, t: float):
    """Flows at time t -> Ft0, Ft1 (H, W, 2): from each pixel at t back to frame 0 / on to frame 1.

    Forward splatting (Baker et al. 2011, Middlebury): source pixel x of a frame moves along its
    flow f to x + s f at time t (s = the time from that frame to t) and is splatted to the 4
    pixels around that point, so no cracks open; at time t its flow back to its frame is -s f
    and on to the other frame (1 - s) f. Per target pixel the candidate of lowest priority wins:
    pixels visible in both frames are in front of those that are not (a surface about to be
    covered, or just uncovered, lies behind the one covering it), then photo-consistency
    decides, then the earlier candidate (frame 0 first, corner by corner, raster order). Pixels
    no candidate reached get the linear flow approximation of Jiang et al. 2018 (Super SloMo).

    One pass of `np.minimum.at` picks the winners: each candidate's key is its priority's float32
    bits (ordered like the values, for values >= 0) above its 32-bit candidate number.
    """
    h, w = O0.shape
    n = h * w
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    none = np.iinfo(np.int64).max
    best = np.full(n + 1, none, dtype=np.int64)  # bin n collects the candidates outside the frame
    source = np.arange(n, dtype=np.int64)
    c = 0
    for F, O, E, s in ((F01, O0, E0, t), (F10, O1, E1, 1 - t)):
        px, py = (gx + s * F[..., 0]).ravel(), (gy + s * F[..., 1]).ravel()
        prio = (O.astype(np.float32) * 1e6 + E).astype(np.float32).ravel()
        high = prio.view(np.int32).astype(np.int64) << 32
        fx, fy = np.floor(px), np.floor(py)
        for qx in (fx, fx + 1):
            for qy in (fy, fy + 1):
                ok = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
                idx = np.where(ok, (qy * w + qx).astype(np.int64), n)
                np.minimum.at(best, idx, high | (c * n + source))
                c += 1
    best = best[:n]
    pix = np.flatnonzero(best != none)
    number = best[pix] & 0xFFFFFFFF
    corner, src = number // n, number % n

    # Fallback everywhere, overwritten where a splat landed.
    Ft0 = (-(1 - t) * t * F01 + t * t * F10).reshape(-1, 2)
    Ft1 = ((1 - t) ** 2 * F01 - t * (1 - t) * F10).reshape(-1, 2)
    first = corner < 4  # from frame 0 (s = t): to-src is Ft0; from frame 1 (s = 1 - t): Ft1
    f = F01.reshape(-1, 2)[src[first]]
    Ft0[pix[first]], Ft1[pix[first]] = -t * f, (1 - t) * f
    f, s = F10.reshape(-1, 2)[src[~first]], 1 - t
    Ft1[pix[~first]], Ft0[pix[~first]] = -s * f, (1 - s) * f
    return Ft0.reshape(h, w, 2), Ft1.reshape(h, w, 2)


def time_flows(start: np.ndarray, end: np.ndarray, preset: str = "medium", occlusion: bool = True):
    """Bidirectional DIS flow between two uint8 (H, W, 3) frames, ready to be projected:
    returns `at_time(t) -> (Ft0, Ft1, w0, w1)` for t in (0, 1): the flows (H, W, 2, pixels) from
    each pixel at time t back to `start` / on to `end`, and the blend weights (H, W) float64 of
    the two warped frames (w0 = 1 - t, w1 = t, zero where the sample point lies outside that
    frame, distance weights again where it lies outside both). Shared by the flow baseline and
    the reference decoder's flow prior.

    1. F01 (start -> end), F10 (end -> start); forward-backward consistency gives O0 / O1, the
       pixels of each frame with no match in the other (occluded or leaving).
    2. Both flows are splatted to time t (Baker et al. 2011); collisions are resolved by
       occlusion first (visible-in-both wins), then by photo-consistency.
    """
    I0, I1 = start.astype(np.float32), end.astype(np.float32)
    F01, F10 = dis_flow(start, end, preset), dis_flow(end, start, preset)
    if occlusion:
        O0, O1 = fb_occlusion(F01, F10), fb_occlusion(F10, F01)
    else:
        O0 = O1 = np.zeros(start.shape[:2], bool)
    # Photometric error of each pixel's match: the tie-breaker between colliding candidates.
    E0 = np.abs(I0 - backward_warp(I1, F01)[0]).mean(-1)
    E1 = np.abs(I1 - backward_warp(I0, F10)[0]).mean(-1)

    def at_time(t: float):
        Ft0, Ft1 = project_flows(F01, F10, O0, O1, E0, E1, t)
        w0 = (1 - t) * sample_points(Ft0)[2]  # a sample point outside a frame is invented: no weight
        w1 = t * sample_points(Ft1)[2]
        none = (w0 + w1) == 0  # no usable sample: fall back to the distance weights
        return Ft0, Ft1, np.where(none, 1 - t, w0), np.where(none, t, w1)

    return at_time
