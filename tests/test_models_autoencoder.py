"""Frame autoencoder: shapes, validation, video helpers, latent scale, losses, and a short
training that must beat a bilinear down-up codec at the same downsampling factor."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidm.errors import ConfigError, ShapeError
from vidm.models import (AutoencoderConfig, AutoencoderKL, PatchDiscriminator, autoencoder_loss, decode_video,
                         discriminator_loss, encode_video, measure_latent_scale)


def small_ae(**kw) -> AutoencoderKL:
    cfg = dict(base_channels=16, ch_mult=(1, 2, 2), downsample_factor=4, num_res_blocks=1, norm_groups=8,
               head_dim=32)
    cfg.update(kw)
    torch.manual_seed(0)
    return AutoencoderKL(AutoencoderConfig(**cfg))


def synth_frames(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: a linear colour ramp at a random angle with two flat
    coloured shapes (discs or squares) on top."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c0 = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    c1 = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    ang = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    proj = xx * ang.cos() + yy * ang.sin()  # (n, size, size)
    lo = ang.cos().clamp(max=0) + ang.sin().clamp(max=0)
    ramp = (proj - lo) / (ang.cos().abs() + ang.sin().abs())  # 0..1 across the frame
    img = c0 + (c1 - c0) * ramp[:, None]
    for _ in range(2):
        colour = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
        cx, cy = torch.rand(2, n, 1, 1, generator=g) * 0.8 + 0.1
        r = torch.rand(n, 1, 1, generator=g) * 0.2 + 0.1
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        square = ((xx - cx).abs() < r) & ((yy - cy).abs() < r)
        shape = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, disc, square)[:, None]
        img = torch.where(shape, colour, img)
    return img.clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(4.0 / (a - b).square().mean())).item()  # peak-to-peak 2 for [-1, 1]


@pytest.fixture(autouse=True)
def one_thread():
    # Small convs on 2 shared cores: a second intra-op thread only adds contention (measured
    # 3-5x slower under load), so these tests run single-threaded and restore the setting.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("factor, ch_mult", [(4, (1, 2, 2)), (8, (1, 2, 2, 2))])
def test_shapes(factor, ch_mult):
    ae = small_ae(downsample_factor=factor, ch_mult=ch_mult)
    x = torch.rand(3, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        post = ae.encode(x)
        z = post.sample(torch.Generator().manual_seed(0))
        recon = ae.decode(z)
    assert post.mean.shape == z.shape == (3, 4, 32 // factor, 48 // factor)
    assert recon.shape == x.shape
    assert ae.latent_shape(32, 48) == (4, 32 // factor, 48 // factor)
    assert post.kl().shape == z.shape and (post.kl() >= 0).all()


def test_bad_inputs_raise():
    ae = small_ae()
    with pytest.raises(ShapeError, match="divisible by the total downsampling factor 4"):
        ae.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ShapeError, match="expected 3 channels"):
        ae.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ShapeError, match="expected 4 channels"):
        ae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"\(B, T, 3, H, W\)"):
        encode_video(ae, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="ch_mult"):
        AutoencoderConfig(downsample_factor=8, ch_mult=(1, 2, 2))


@pytest.mark.parametrize("T", [2, 5, 8])
def test_video_round_trip_shapes_and_chunking(T):
    ae = small_ae().eval()
    ae.config.latent_scale = 2.0
    video = torch.rand(2, T, 3, 16, 16) * 2 - 1
    z = encode_video(ae, video, chunk_size=3)
    assert z.shape == (2, T, 4, 4, 4)
    with torch.no_grad():
        direct = ae.encode(video.flatten(0, 1)).mean.view(2, T, 4, 4, 4) * 2.0
    torch.testing.assert_close(z, direct, atol=1e-5, rtol=1e-5)  # chunking and scaling are transparent
    out = decode_video(ae, z, chunk_size=4)
    assert out.shape == video.shape and out.abs().max() <= 1.0


def test_measure_latent_scale():
    ae = small_ae()
    frames = synth_frames(24, 32, torch.Generator().manual_seed(0))
    scale = measure_latent_scale(ae, frames.view(4, 6, 3, 32, 32), chunk_size=5)
    assert ae.config.latent_scale == scale
    z = encode_video(ae, frames[None])
    assert abs(z.std().item() - 1.0) < 1e-3


def test_losses():
    ae = small_ae()
    disc = PatchDiscriminator(channels=16, num_layers=2)
    x = synth_frames(4, 32, torch.Generator().manual_seed(0))
    recon, post = ae(x, generator=torch.Generator().manual_seed(0))
    before = autoencoder_loss(x, recon, post, discriminator=disc, disc_start=100, step=10)
    after = autoencoder_loss(x, recon, post, discriminator=disc, disc_start=100, step=100, disc_weight=0.5)
    assert set(before) == {"loss", "l1", "kl", "g_adv"}
    assert before["g_adv"].item() == 0.0
    torch.testing.assert_close(before["loss"], before["l1"] + 1e-6 * before["kl"])
    torch.testing.assert_close(after["loss"], after["l1"] + 1e-6 * after["kl"] + 0.5 * after["g_adv"])
    d = discriminator_loss(disc, x, recon)
    assert d["d_loss"].item() >= 0
    d["d_loss"].backward()
    assert all(p.grad is None for p in ae.parameters())  # D's loss does not reach the AE
    assert disc(x).shape[:2] == (4, 1)


def test_short_training_beats_bilinear():
    """Comparison at the same downsampling factor f = 4 on 32x32 frames, on held-out frames:
    AE latents (4, 8, 8) = 256 floats (posterior mean) vs bilinear down to (3, 8, 8) = 192 floats
    (antialiased, i.e. a proper resize) and bilinear back up. Metric: L1, the AE's training loss.
    (A short run mostly trains the linear shortcut; see AutoencoderConfig.linear_shortcut.)"""
    g = torch.Generator().manual_seed(0)
    ae = small_ae(base_channels=8, norm_groups=4, head_dim=16)  # small deep path: more steps per second
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    for _ in range(250):
        x = synth_frames(8, 32, g)
        recon, post = ae(x, generator=g)
        loss = autoencoder_loss(x, recon, post)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = synth_frames(64, 32, torch.Generator().manual_seed(123))
    with torch.no_grad():
        recon, _ = ae(test, sample_posterior=False)
    down = F.interpolate(test, scale_factor=0.25, mode="bilinear", antialias=True, align_corners=False)
    base = F.interpolate(down, scale_factor=4, mode="bilinear", align_corners=False)
    ae_l1, base_l1 = (recon - test).abs().mean().item(), (base - test).abs().mean().item()
    print(f"AE L1 {ae_l1:.4f} PSNR {psnr(recon, test):.2f} | bilinear L1 {base_l1:.4f} PSNR {psnr(base, test):.2f}")
    assert ae_l1 < 0.9 * base_l1


def test_save_load_round_trip(tmp_path):
    ae = small_ae().eval()
    ae.config.latent_scale = 0.37
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # non-zero output layers
    x = synth_frames(2, 16, torch.Generator().manual_seed(0))
    ae.save_pretrained(tmp_path / "ae")
    ae2 = AutoencoderKL.from_pretrained(tmp_path / "ae").eval()
    assert ae2.config == ae.config and ae2.config.latent_scale == 0.37
    with torch.no_grad():
        assert torch.equal(ae(x, sample_posterior=False)[0], ae2(x, sample_posterior=False)[0])
