"""Global-matching splat start for in-between windows (vidm.diffusion.splat)."""

from __future__ import annotations

import pytest
import torch

from vidm.diffusion.splat import (brackets, forward_splat, match_displacements, splat_inbetweens,
                                  splat_window_mean)
from vidm.errors import ConfigError, ShapeError


C = 8
OBJ = torch.tensor([4.0, -4.0, 4.0, 4.0] * 2, dtype=torch.float64)


def _scene(h=11, w=13, obj=(2, 3), seed=0):
    """A static random background (every position distinct, so it matches itself) with one
    strongly coloured 1-position object at obj = (x, y). (1, C, h, w), float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, C, h, w, generator=g, dtype=torch.float64)
    z[0, :, obj[1], obj[0]] = OBJ
    return z


def test_matching_finds_a_far_move_and_a_static_background():
    a, b = _scene(obj=(2, 3)), _scene(obj=(10, 7))
    d = match_displacements(a, b, temperature=0.05)  # (1, N, 2)
    w = a.shape[-1]
    assert torch.allclose(d[0, 3 * w + 2], torch.tensor([8.0, 4.0], dtype=torch.float64), atol=1e-3)
    # background positions away from the object stay where they are
    assert d[0, 0].abs().max() < 1e-3 and d[0, 5 * w + 6].abs().max() < 1e-3


@pytest.mark.parametrize("t,where", [(0.5, (6, 5)), (0.25, (4, 4))])
def test_the_object_lands_on_its_path_at_time_t(t, where):
    # an odd grid and a move of (8, 4): at t = 1/2 the object is at (6, 5), at 1/4 at (4, 4)
    a, b = _scene(obj=(2, 3)), _scene(obj=(10, 7))
    m = splat_inbetweens(a, b, [t])[0, 0]  # (C, h, w)
    sim = (m * OBJ[:, None, None]).sum(0)  # largest where the object colour is
    y, x = divmod(int(sim.argmax()), m.shape[-1])
    assert (x, y) == where
    # no depth order: the object (weights 1-t and t from the two ends) is averaged with the
    # background staying there (1-t and t) and the cross-fade (fallback 0.05, background here)
    bg = a[0, :, y, x]
    assert torch.allclose(m[:, y, x], (OBJ + 1.05 * bg) / 2.05, atol=0.02)


def test_uncovered_background_fills_the_hole_instead_of_a_ghost():
    a, b = _scene(obj=(2, 3)), _scene(obj=(10, 7))
    bg = _scene(obj=(0, 0))[0, :, 3, 2]  # what the object hides in a at (2, 3)
    ghost = lambda m: (m[0, 0, :, 3, 2] - bg).norm()  # noqa: E731
    no_stay, with_stay = (splat_inbetweens(a, b, [0.5], stay=s) for s in (0.0, 1.0))
    assert ghost(with_stay) < 0.5 * ghost(no_stay)


def test_identical_frames_come_back_and_the_ends_are_the_inputs():
    a = _scene()
    m = splat_inbetweens(a, a, [0.0, 0.3, 1.0])
    for k in range(3):
        assert torch.allclose(m[:, k], a, atol=1e-6)
    b = _scene(obj=(9, 2), seed=0)
    ends = splat_inbetweens(a, b, [0.0, 1.0])
    assert torch.allclose(ends[:, 0], a, atol=1e-3) and torch.allclose(ends[:, 1], b, atol=1e-3)


def test_forward_splat_is_bilinear_and_drops_what_leaves_the_grid():
    vals = torch.tensor([[[1.0, 2.0]]])  # (B=1, C=1, N=2)
    tgt = torch.tensor([[[0.25, 0.5], [5.0, 0.0]]])  # second lands off a 2x2 grid
    acc, wsum = forward_splat(vals, tgt, torch.ones(1, 2), 2, 2)
    assert torch.allclose(wsum, torch.tensor([[0.375, 0.125, 0.375, 0.125]]))
    assert torch.allclose(acc[0, 0], wsum[0])  # only the value-1 source landed


def test_brackets_and_window_mean():
    known = torch.tensor([True, False, False, True, False, True])
    times = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    assert brackets(known, times) == [(1, 0, 3, 1 / 3), (2, 0, 3, 2 / 3), (4, 3, 5, 1 / 3)]
    assert brackets(torch.tensor([True, False, True, False]), torch.arange(4.0)) is None  # one-sided
    x = torch.randn(2, 6, 4, 5, 5)
    m = splat_window_mean(x, known, times)
    assert torch.equal(m[:, known], x[:, known])
    assert torch.allclose(m[:, 4], splat_inbetweens(x[:, 3], x[:, 5], [1 / 3])[:, 0])
    with pytest.raises(ConfigError):
        splat_window_mean(x[:, :4], torch.tensor([True, False, True, False]), torch.arange(4.0))


def test_bad_arguments():
    with pytest.raises(ShapeError):
        splat_inbetweens(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 6), [0.5])
    with pytest.raises(ConfigError):
        splat_inbetweens(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 5), [0.5], temperature=0)
    with pytest.raises(ShapeError):
        brackets(torch.ones(3, dtype=torch.bool), torch.arange(4.0))
