"""Exponential moving average of a model's weights (the model we sample from and export)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy of `model` updated as ema = decay_t * ema + (1 - decay_t) * weights.

    With `warmup`, decay_t = min(decay, (1 + t) / (10 + t)) for update t: the first updates
    follow the weights closely so the random initialisation is not averaged into the result.
    Buffers are copied, not averaged. Registered with accelerate for save_state/load_state.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        # One fused pass over all tensors: ema += (1 - decay) * (p - ema).
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def to(self, device) -> "EMA":
        self.model.to(device)
        return self

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
