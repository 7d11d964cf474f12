"""Shared helpers for the Triton kernel tests."""

from __future__ import annotations

import os

import torch


def fresh_generator() -> tuple[torch.Generator, int]:
    """New random inputs every run; the seed goes into failure messages to reproduce them."""
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), seed


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest error relative to the largest reference magnitude (at least 0.01: some exact
    gradients are zero, e.g. dq and dk when a sequence has one element). NaN stays NaN."""
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-2)).item()


def use_kernels(monkeypatch, mode: str) -> None:
    """VIDM_KERNELS=mode from here on in this test. The kernels read the variable once, at their
    first dispatch, so the remembered value is forgotten too (tests/conftest.py forgets it again
    after each test, once monkeypatch has put the environment back)."""
    from vidm.kernels import reset_settings

    monkeypatch.setenv("VIDM_KERNELS", mode)
    reset_settings()
