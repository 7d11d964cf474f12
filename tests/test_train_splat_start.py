"""Motion training with the splat start (`diffusion.p_splat_start`, train.motion.splat_starts)."""

from __future__ import annotations

import torch

from vidm.train.motion import splat_starts
from vidm.diffusion.splat import splat_window_mean


def test_splat_starts_lie_between_x0_and_the_splat_on_unknown_frames_only():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 4, 6, 6, generator=g)
    times = torch.arange(5.0).expand(3, -1)
    known = torch.tensor([[True, False, False, False, True],     # interpolation: gets a start
                          [True, True, False, False, False],     # prediction: nothing to interpolate
                          [True, False, True, False, True]])     # key frames: gets a start
    start, n = splat_starts(x0, known, times, 1.0, g)
    assert n == 2 and torch.equal(start[1], x0[1])
    for b in (0, 2):
        assert torch.equal(start[b, known[b]], x0[b, known[b]])
        m = splat_window_mean(x0[b:b + 1], known[b], times[b])[0]
        d, full = (start[b] - x0[b])[~known[b]], (m - x0[b])[~known[b]]
        u = float((d * full).sum() / (full * full).sum())
        assert 0.0 <= u <= 1.0 and torch.allclose(d, u * full, atol=1e-5)
    same, n0 = splat_starts(x0, known, times, 0.0, g)
    assert n0 == 0 and torch.equal(same, x0)
