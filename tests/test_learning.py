"""Learning check (issue 3): a tiny pixel-space motion model, trained for 300 steps in the test
with the real stack (MotionUNet + Denoiser + RaMViD masks + edm_loss), interpolates a square
moving in a straight line better than a linear cross-fade, with Heun and DPM-Solver++(2M).

12x12 frames, one channel (-1 background, +1 square), T = 5 (first and last frame known, three
in between). About 50 s of single-thread CPU time; it pins torch to one thread because on a
shared 2-core machine two threads contend badly (restored afterwards).
"""

import pytest
import torch

from vidm.diffusion import (
    Denoiser,
    MaskConfig,
    edm_loss,
    get_sampler,
    get_sigmas_karras,
    initial_state,
    known_frame_denoiser,
    sample_training_masks,
)
from vidm.models import MotionUNet, MotionUNetConfig

HW, SIZE, T = 12, 4, 5  # frame side, square side, window


def moving_squares(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, T, 1, HW, HW) in {-1, 1}: a SIZE x SIZE square at constant velocity, inside the frame."""
    vmax = (HW - SIZE) / (T - 1)
    v = (torch.rand(n, 2, generator=generator) * 2 - 1) * vmax  # (n, 2) px / frame
    lo = (-v * (T - 1)).clamp(min=0)
    hi = (HW - SIZE) - (v * (T - 1)).clamp(min=0)
    p0 = lo + torch.rand(n, 2, generator=generator) * (hi - lo)
    pos = (p0[:, None] + v[:, None] * torch.arange(T)[None, :, None]).round().long()  # (n, T, 2)
    ar = torch.arange(HW)
    in_y = (ar >= pos[..., :1]) & (ar < pos[..., :1] + SIZE)  # (n, T, HW)
    in_x = (ar >= pos[..., 1:]) & (ar < pos[..., 1:] + SIZE)
    square = in_y[..., :, None] & in_x[..., None, :]  # (n, T, HW, HW)
    return (square.float() * 2 - 1)[:, :, None]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_motion_model_interpolates_better_than_crossfade(one_thread):
    torch.manual_seed(0)
    cfg = MotionUNetConfig(in_channels=1, model_channels=16, ch_mult=(1, 2), attn_levels=(),
                           head_dim=16, norm_groups=4, temporal_levels=(0, 1))
    denoiser = Denoiser(MotionUNet(cfg), sigma_data=0.5)
    steps, batch = 300, 8
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3, betas=(0.9, 0.99))
    # short warm-up, then linear decay: a short run ends on small, averaged-out steps (no EMA)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * max(0.05, 1 - i / steps))
    masks_cfg = MaskConfig(p_prediction=0, p_interpolation=1, p_keyframes=0, p_random=0,
                           p_unconditional=0, p_drop_known=0, p_drop_anchor=0)
    g = torch.Generator().manual_seed(0)
    times = torch.arange(T, dtype=torch.float32).expand(batch, T)
    for _ in range(steps):
        x0 = moving_squares(batch, g)
        m = sample_training_masks(batch, T, g, masks_cfg)
        # P_mean -0.5 (EDM: -1.2): where the square goes is decided at mid/high noise, so more
        # of this very short run is spent there.
        loss = edm_loss(denoiser, x0, m.known, g, P_mean=-0.5, times=times)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert torch.isfinite(loss)

    n = 32
    gt = moving_squares(n, torch.Generator().manual_seed(123))
    known = torch.zeros(n, T, dtype=torch.bool)
    known[:, [0, -1]] = True
    alpha = torch.linspace(0, 1, T)[None, :, None, None, None]
    crossfade = (1 - alpha) * gt[:, :1] + alpha * gt[:, -1:]

    def mse(video):  # over the in-between frames only
        return float(((video[:, 1:-1] - gt[:, 1:-1]) ** 2).mean())

    denoiser.eval()
    denoise = known_frame_denoiser(denoiser, known, times=torch.arange(T, dtype=torch.float32).expand(n, T))
    for name, num_steps in (("heun", 8), ("dpmpp_2m", 12)):
        sigmas = get_sigmas_karras(num_steps, 0.002, 80.0)
        x = initial_state(gt, known, float(sigmas[0]), torch.Generator().manual_seed(1))
        out = get_sampler(name)(denoise, x, sigmas)
        assert torch.equal(out[known], gt[known])
        assert mse(out) < 0.8 * mse(crossfade), (name, mse(out), mse(crossfade))
