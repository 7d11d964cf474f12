"""Forward splatting of the flows to time t (vidm.eval.flow.project_flows) against a plain loop."""

import numpy as np
import pytest

from vidm.eval.flow import project_flows


def _splat_by_loop(F01, F10, O0, O1, E0, E1, t):
    """The rule written out candidate by candidate: frame 0 then frame 1, corner by corner
    (x floor / floor + 1 outer, y inner), pixels in raster order; the lowest priority wins, ties
    keep the earlier candidate; unreached pixels keep the linear approximation."""
    h, w = O0.shape
    Ft0 = -(1 - t) * t * F01 + t * t * F10
    Ft1 = (1 - t) ** 2 * F01 - t * (1 - t) * F10
    best = np.full((h, w), np.inf, dtype=np.float32)
    taken = np.zeros((h, w), bool)
    for F, O, E, s, first in ((F01, O0, E0, t, True), (F10, O1, E1, 1 - t, False)):
        prio = (O.astype(np.float32) * 1e6 + E).astype(np.float32)
        for cx in (0, 1):
            for cy in (0, 1):
                for y in range(h):
                    for x in range(w):
                        qx = int(np.floor(np.float32(x) + np.float32(s) * F[y, x, 0])) + cx
                        qy = int(np.floor(np.float32(y) + np.float32(s) * F[y, x, 1])) + cy
                        if not (0 <= qx < w and 0 <= qy < h):
                            continue
                        if prio[y, x] < best[qy, qx] or not taken[qy, qx]:
                            best[qy, qx], taken[qy, qx] = prio[y, x], True
                            back, on = -s * F[y, x], (1 - s) * F[y, x]
                            if first:
                                Ft0[qy, qx], Ft1[qy, qx] = back, on
                            else:
                                Ft1[qy, qx], Ft0[qy, qx] = back, on
    return Ft0, Ft1


@pytest.mark.parametrize("t", [0.25, 0.5, 0.8])
def test_projection_matches_the_rule_written_as_a_loop(t):
    rng = np.random.default_rng(0)
    h, w = 7, 9
    F01 = (rng.normal(size=(h, w, 2)) * 2).astype(np.float32)
    F10 = (rng.normal(size=(h, w, 2)) * 2).astype(np.float32)
    O0, O1 = rng.random((h, w)) < 0.2, rng.random((h, w)) < 0.2
    E0 = rng.integers(0, 3, (h, w)).astype(np.float32)  # few distinct values: many ties
    E1 = rng.integers(0, 3, (h, w)).astype(np.float32)
    got = project_flows(F01, F10, O0, O1, E0, E1, t)
    want = _splat_by_loop(F01, F10, O0, O1, E0, E1, t)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_uniform_shift_projects_to_the_linear_split():
    h, w = 12, 16
    F01 = np.zeros((h, w, 2), np.float32)
    F01[..., 0] = 4.0
    F10 = -F01
    zeros = np.zeros((h, w), np.float32)
    Ft0, Ft1 = project_flows(F01, F10, zeros > 0, zeros > 0, zeros, zeros, 0.25)
    assert np.allclose(Ft0[..., 0], -1.0) and np.allclose(Ft1[..., 0], 3.0)
    assert np.allclose(Ft0[..., 1], 0.0) and np.allclose(Ft1[..., 1], 0.0)
