"""The known-frame prior mean (MotionUNetConfig.prior_mean = "known") and the denoiser around it."""

import pytest
import torch
from torch import nn

from vidm.diffusion import Denoiser, edm_precond
from vidm.diffusion.prior import known_frame_mean
from vidm.errors import ConfigError, ShapeError
from vidm.models import MotionUNet, MotionUNetConfig


def frames(values, C=2, H=3, W=2):
    """(1, T, C, H, W) whose frame t is the constant values[t] (easy to read off)."""
    v = torch.tensor(values, dtype=torch.float64)
    return v.view(1, -1, 1, 1, 1).expand(1, len(values), C, H, W).clone()


def test_linear_in_time_between_known_frames_held_outside_zero_at_known():
    x = frames([2.0, 99.0, 99.0, 8.0, 99.0, -1.0])
    known = torch.tensor([[True, False, False, True, False, False]])
    times = torch.tensor([[0.0, 1.0, 2.5, 3.0, 4.0, 7.0]])
    m = known_frame_mean(x, known, times)[0, :, 0, 0, 0]
    # frame 1 at t=1: 2 + (8-2)/3; frame 2 at t=2.5: 2 + 6 * 2.5/3; after the last known frame: held
    expect = torch.tensor([0.0, 4.0, 7.0, 0.0, 8.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(m, expect)
    assert (known_frame_mean(x, torch.zeros_like(known), times) == 0).all()  # nothing known: 0


def test_any_frame_order_and_uneven_times_and_ties():
    x = frames([5.0, 1.0, 3.0, 7.0])
    known = torch.tensor([[False, True, False, True]])
    times = torch.tensor([[4.0, 0.0, 6.0, 8.0]])  # known at t=0 (value 1) and t=8 (value 7)
    m = known_frame_mean(x, known, times)[0, :, 0, 0, 0]
    torch.testing.assert_close(m, torch.tensor([4.0, 0.0, 5.5, 0.0], dtype=torch.float64))
    # an unknown frame at a known frame's time gets that frame
    m = known_frame_mean(x, known, torch.tensor([[0.0, 0.0, 6.0, 8.0]]))[0, :, 0, 0, 0]
    assert m[0] == 1.0
    with pytest.raises(ShapeError):
        known_frame_mean(x, known[:, :3], times)


class ZeroNet(nn.Module):
    """An untrained residual backbone: F = 0."""

    def __init__(self, prior_mean):
        super().__init__()
        self.config = MotionUNetConfig(prior_mean=prior_mean)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, c_noise, known, times=None, anchor=None, anchor_mask=None):
        return x * self.w


@pytest.mark.parametrize("prior_mean", ["none", "known"])
def test_untrained_denoiser_gives_the_blend_only_with_the_prior(prior_mean):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 4, generator=g, dtype=torch.float64)
    known = torch.tensor([[True, False, False, False, True]] * 2)
    times = torch.arange(5.0).expand(2, 5)
    sigma = torch.where(known, 0.0, 3.0).double()
    D = Denoiser(ZeroNet(prior_mean))(x, sigma, times=times)
    c_skip = edm_precond(torch.tensor(3.0, dtype=torch.float64), 0.5)[0]
    m = known_frame_mean(x, known, times) if prior_mean == "known" else torch.zeros_like(x)
    torch.testing.assert_close(D[:, 1:4], m[:, 1:4] + c_skip * (x[:, 1:4] - m[:, 1:4]))
    assert torch.equal(D[:, [0, 4]], x[:, [0, 4]])  # known frames pass through exactly
    if prior_mean == "known":
        with pytest.raises(ConfigError, match="times"):
            Denoiser(ZeroNet(prior_mean))(x, sigma)


def test_backbone_input_is_the_plain_one():
    seen = {}

    class Spy(ZeroNet):
        def forward(self, x, c_noise, known, times=None, anchor=None, anchor_mask=None):
            seen["x"] = x
            return super().forward(x, c_noise, known, times)

    x = frames([2.0, 6.0, 8.0])
    known = torch.tensor([[True, False, True]])
    Denoiser(Spy("known"))(x, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), times=torch.arange(3.0)[None])
    c_in0, c_in1 = 1 / 0.5, (1 + 0.25) ** -0.5
    net_in = seen["x"].double()
    assert torch.allclose(net_in[0, 0], x[0, 0] * c_in0) and torch.allclose(net_in[0, 2], x[0, 2] * c_in0)
    assert torch.allclose(net_in[0, 1], x[0, 1] * c_in1)  # the frame itself, not its residual


def test_motion_unet_config_round_trip():
    cfg = MotionUNetConfig(prior_mean="known")
    assert MotionUNetConfig.from_dict(cfg.to_dict()).prior_mean == "known"
    with pytest.raises(ConfigError, match="prior_mean"):
        MotionUNetConfig(prior_mean="blend")
    assert isinstance(MotionUNet(MotionUNetConfig(model_channels=16, ch_mult=(1, 2), head_dim=16, norm_groups=4,
                                                  attn_levels=(1,), temporal_levels=(1,), prior_mean="known")),
                      MotionUNet)
