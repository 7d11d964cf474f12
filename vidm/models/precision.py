"""Which autocast dtype pays off on a device.

bf16 autocast is only a win where the hardware does bf16 math: CUDA GPUs with bf16 support and
CPUs whose oneDNN reports bf16 (AVX-512 BF16 / AMX). On other CPUs (e.g. AVX2-only) PyTorch
emulates bf16 and convs/matmuls run ~30-100x SLOWER than fp32, so the answer there is fp32.
"""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """torch.bfloat16 where bf16 is fast on `device`; float16 on CUDA GPUs without bf16 (training
    then needs a GradScaler); else None (run in float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


__all__ = ["cpu_has_fast_bf16", "autocast_dtype"]
