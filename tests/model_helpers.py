"""Helpers shared by the model tests."""

import torch


def randomize_zero_init(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give the zero-initialised output layers random weights, so the net is not identically 0
    (a trained net's properties are what the tests check)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if (p == 0).all():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model
