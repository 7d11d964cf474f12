"""A classical optical-flow prior for two-sided reference decoding.

Learning flow from scratch on a few real clips, on two CPU cores, does not reach what OpenCV's
DIS flow already gives (the design notes measure it). So an in-between frame's decoder starts
from the flow baseline's own answer and learns a correction: DIS flow both ways between the two
references, projected to the target's time (`vidm.eval.flow.time_flows`), gives per-pixel flows
target -> each reference and their blend weights; the decoder adds its deltas to these at every
level, steered by the latent where the latent knows better (small fast objects, occlusions,
motion that is not linear in time).

Only examples whose two references lie on both sides of the target get a prior; the others
(prediction, a single reference, frames under 12 px, which DIS refuses) get zero flow and
zero logits, i.e. exactly the decoder without a prior.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vidm.models.warp import resize

PRIORS = ("none", "dis")
PRIOR_SIDE = 256  # the prior is estimated at most this large (long side); the decoder refines above
FLOOR = 1.0e-4  # weight floor before the log (a reference DIS says is unusable)
GEN_WEIGHT = 1.0e-2  # initial share of the plain decoder's frame D(z)
DIS_MIN_SIDE = 12  # OpenCV's DIS needs a side of at least 12 px


@torch.no_grad()
def dis_prior(refs: torch.Tensor, offsets: torch.Tensor, present: torch.Tensor,
              max_side: int = PRIOR_SIDE, preset: str = "medium") -> tuple[torch.Tensor, torch.Tensor]:
    """refs (N, 2, 3, H, W) in [-1, 1], offsets / present (N, 2) -> (flow (N, 4, h, w) as
    fractions of the frame, slot k's in channels 2k..2k+1; logits (N, 3, h, w): log blend
    weights of slot 0, slot 1 and D(z)), float32 on refs' device, (h, w) = (H, W) shrunk so the
    long side is at most `max_side`."""
    from vidm.eval.flow import time_flows

    N, _, _, H, W = refs.shape
    s = min(1.0, max_side / max(H, W))
    h, w = max(1, round(H * s)), max(1, round(W * s))
    flow = torch.zeros(N, 4, h, w)
    logits = torch.zeros(N, 3, h, w)
    offs = offsets.detach().float().cpu()
    both = (present.detach().cpu() > 0).all(1) & (offs[:, 0] * offs[:, 1] < 0)
    if max(h, w) < DIS_MIN_SIDE or not bool(both.any()):
        return flow.to(refs.device), logits.to(refs.device)
    small = resize(refs[both].detach().float().flatten(0, 1), (h, w)).view(-1, 2, 3, h, w)
    u8 = ((small + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    frac = torch.tensor([w, h], dtype=torch.float32).view(2, 1, 1)
    pairs: dict[tuple[bytes, bytes], object] = {}  # the in-betweens of one pair share its DIS flows
    for i, n in enumerate(torch.nonzero(both).flatten().tolist()):
        a, b = (0, 1) if offs[n, 0] < 0 else (1, 0)  # a: the reference before the target
        t = float(-offs[n, a] / (offs[n, b] - offs[n, a]))
        key = (u8[i, a].tobytes(), u8[i, b].tobytes())
        if key not in pairs:
            pairs[key] = time_flows(u8[i, a], u8[i, b], preset)
        Fa, Fb, wa, wb = pairs[key](t)
        for k, F, wk in ((a, Fa, wa), (b, Fb, wb)):
            flow[n, 2 * k:2 * k + 2] = torch.from_numpy(F).permute(2, 0, 1) / frac
            logits[n, k] = torch.from_numpy(np.log(np.maximum(wk, FLOOR)).astype(np.float32))
        logits[n, 2] = math.log(GEN_WEIGHT)
    return flow.to(refs.device), logits.to(refs.device)


__all__ = ["dis_prior", "PRIORS", "PRIOR_SIDE"]
