"""RaMViD/VIDIM training masks: mode frequencies, mask shapes per mode, dropout, seeding."""

import pytest
import torch

from vidm.diffusion import MODES, MaskConfig, apply_conditioning_dropout, sample_known_mask, sample_training_masks
from vidm.errors import ConfigError, ShapeError

B, T = 20_000, 7


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mode_frequencies_and_shapes():
    cfg = MaskConfig(p_prediction=0.4, p_interpolation=0.25, p_keyframes=0.15, p_random=0.1, p_unconditional=0.1)
    known, modes = sample_known_mask(B, T, g(), cfg, return_modes=True)
    assert known.shape == (B, T) and known.dtype == torch.bool and modes.shape == (B,)
    probs = cfg.mode_probs()
    for i, name in enumerate(MODES):
        assert abs((modes == i).float().mean().item() - probs[i].item()) < 0.015, name
    assert (~known).any(1).all()  # every window has something to predict
    by = {name: known[modes == i] for i, name in enumerate(MODES)}

    pred = by["prediction"]
    k = pred.sum(1)
    assert bool((k >= 1).all() and (k <= T - 1).all())
    assert torch.equal(pred, torch.arange(T)[None] < k[:, None])  # prefixes
    assert set(k.tolist()) == set(range(1, T))  # every prefix length occurs

    interp = by["interpolation"]
    assert interp[:, [0, -1]].all() and not interp[:, 1:-1].any()

    keys = by["keyframes"]
    assert keys[:, [0, -1]].all() and (~keys[:, 1:-1]).any(1).all()
    assert keys[:, 1:-1].any(1).float().mean() > 0.5  # usually extra key frames

    rnd = by["random"]
    assert 0.3 < rnd.float().mean() < 0.5 and (~rnd).any(1).all()
    assert not by["unconditional"].any()


def test_seeded():
    a = sample_training_masks(64, T, g(3))
    b = sample_training_masks(64, T, g(3))
    c = sample_training_masks(64, T, g(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.known, c.known)


def test_conditioning_dropout():
    known = torch.ones(B, T, dtype=torch.bool)
    known[:, -1] = False
    dropped, anchor_mask = apply_conditioning_dropout(known, g(1), p_drop_known=0.2, p_drop_anchor=0.3)
    row_dropped = ~dropped.any(1)
    assert abs(row_dropped.float().mean().item() - 0.2) < 0.015
    assert torch.equal(dropped[~row_dropped], known[~row_dropped])  # all or nothing per sample
    assert anchor_mask.dtype == torch.bool and abs((~anchor_mask).float().mean().item() - 0.3) < 0.015
    # independent draws
    both = (row_dropped & ~anchor_mask).float().mean().item()
    assert abs(both - 0.2 * 0.3) < 0.01
    m = sample_training_masks(1000, T, g(2), MaskConfig(p_drop_known=0.0, p_drop_anchor=0.0))
    assert m.anchor_mask.all() and torch.equal(m.known, sample_known_mask(1000, T, g(2)))


def test_short_windows_and_bad_config():
    only_pred = MaskConfig(p_interpolation=0, p_keyframes=0)
    known = sample_known_mask(100, 2, g(), only_pred)
    assert (~known).any(1).all()  # never fully known
    with pytest.raises(ConfigError, match="T >= 3"):
        sample_known_mask(10, 2, g())
    with pytest.raises(ShapeError, match="T must be"):
        sample_known_mask(10, 1, g(), only_pred)
    with pytest.raises(ConfigError, match="mode probabilities"):
        sample_known_mask(10, 5, g(), MaskConfig(0, 0, 0, 0, 0))
    with pytest.raises(ConfigError, match="p_drop_known"):
        sample_known_mask(10, 5, g(), MaskConfig(p_drop_known=1.5))
    # T = 3: key frames degenerate to interpolation (the only interior frame stays unknown)
    known, modes = sample_known_mask(200, 3, g(), return_modes=True)
    assert torch.equal(known[modes == 2], known.new_tensor([[True, False, True]]).expand(int((modes == 2).sum()), 3))
