"""Backward warping and image pyramids for the reference decoder.

Flows are stored as fractions of the frame (dx / W, dy / H), so one field means the same motion
at every resolution: upsampling a flow to a finer level is a plain bilinear resize, no rescaling.
`backward_warp(img, flow)[y, x] = img[y + dy, x + dx]` (bilinear, border padding). Sampling is
an explicit 4-tap gather instead of `grid_sample`, so integer displacements (zero flow included)
reproduce pixels exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidm.errors import ShapeError


def backward_warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """img (N, C, H, W), flow (N, 2, H, W) as fractions of (W, H) -> (N, C, H, W)."""
    if img.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or img.shape[0] != flow.shape[0] \
            or img.shape[2:] != flow.shape[2:]:
        raise ShapeError(f"backward_warp: img (N, C, H, W) and flow (N, 2, H, W) must match, "
                         f"got {tuple(img.shape)} and {tuple(flow.shape)}")
    N, C, H, W = img.shape
    flow = flow.to(img.dtype)
    xs = torch.arange(W, device=img.device, dtype=img.dtype).view(1, 1, W) + flow[:, 0] * W
    ys = torch.arange(H, device=img.device, dtype=img.dtype).view(1, H, 1) + flow[:, 1] * H
    xs, ys = xs.clamp(0, W - 1), ys.clamp(0, H - 1)  # border padding
    x0, y0 = xs.detach().floor(), ys.detach().floor()
    wx, wy = (xs - x0).unsqueeze(1), (ys - y0).unsqueeze(1)  # (N, 1, H, W)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    flat = img.reshape(N, C, H * W)

    def tap(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        idx = (y * W + x).view(N, 1, H * W).expand(N, C, H * W)
        return flat.gather(2, idx).view(N, C, H, W)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x1) * wx
    bottom = tap(y1, x0) * (1 - wx) + tap(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


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


__all__ = ["backward_warp", "resize", "level_sizes", "laplacian_pyramid", "laplacian_l1"]
