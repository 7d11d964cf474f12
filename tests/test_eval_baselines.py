"""Classical interpolation baselines: shapes, cross-fade exactness, flow beats cross-fade."""

import numpy as np
import pytest

from vidm.errors import ConfigError, ShapeError
from vidm.eval.baselines import BASELINES, crossfade, get_baseline, interpolation_times
from vidm.eval.metrics import psnr

cv2 = pytest.importorskip("cv2")


def _texture(rng, h, w):
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)


def test_crossfade_midpoint_is_the_average():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    mid = crossfade(a, b, 1)
    assert mid.shape == (1, 20, 24, 3) and mid.dtype == np.uint8
    assert np.abs(mid[0].astype(float) - (a.astype(float) + b) / 2).max() <= 0.5
    np.testing.assert_allclose(interpolation_times(3), [0.25, 0.5, 0.75])


def test_flow_beats_crossfade_on_translation():
    rng = np.random.default_rng(0)
    tex = _texture(rng, 80, 100)
    a, mid, b = tex[8:72, 8:72], tex[8:72, 11:75], tex[8:72, 14:78]  # 6 px pan to the left
    p_flow = psnr(get_baseline("flow")(a, b, 1)[0], mid).item()
    p_fade = psnr(crossfade(a, b, 1)[0], mid).item()
    assert p_flow > p_fade + 10, (p_flow, p_fade)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_interface(name):
    rng = np.random.default_rng(1)
    a = _texture(rng, 32, 40)
    out = BASELINES[name](a, a, 3)
    assert out.shape == (3, 32, 40, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a).max() <= 1  # nothing moves: every frame is the input
    with pytest.raises(ShapeError, match="differ in size"):
        BASELINES[name](a, a[:16], 3)
    with pytest.raises(ShapeError, match="uint8"):
        BASELINES[name](a.astype(np.float32), a, 3)
    with pytest.raises(ConfigError, match="num_frames"):
        BASELINES[name](a, a, 0)


def test_unknown_baseline():
    with pytest.raises(ConfigError, match="crossfade"):
        get_baseline("rife")
