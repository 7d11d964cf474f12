"""The reference decoder's DIS flow prior (vidm.models.flow_prior) and its use in decoding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidm.errors import ConfigError
from vidm.models.autoencoder import AutoencoderKL
from vidm.models.flow_prior import dis_prior
from vidm.models.presets import get_preset


def texture(h, w, seed=0):
    """Smooth random RGB texture in [-1, 1], (3, h, w): enough detail for DIS to lock on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4 + 3, w // 4 + 3, generator=g)
    x = F.interpolate(x, size=(h + 12, w + 12), mode="bicubic", align_corners=False)
    return (x[0, :, 6:6 + h, 6:6 + w].clamp(0, 1) * 2 - 1)


def shifted(img, dx, dy):
    """Content moved by (dx, dy) whole pixels: out[y, x] = img[y - dy, x - dx] (edges replicated)."""
    h, w = img.shape[-2:]
    ys = (torch.arange(h) - dy).clamp(0, h - 1)
    xs = (torch.arange(w) - dx).clamp(0, w - 1)
    return img[:, ys][:, :, xs]


def prior_ae(seed=0, prior="dis"):
    torch.manual_seed(seed)
    cfg = get_preset("autoencoder", "tiny").replace(references=2, ref_channels=16, ref_flow_prior=prior)
    return AutoencoderKL(cfg).eval()


def test_no_prior_without_references_on_both_sides():
    refs = torch.stack([texture(48, 64), texture(48, 64, 1)])[None].repeat(3, 1, 1, 1, 1)
    offsets = torch.tensor([[-1.0, -3.0], [-1.0, 0.0], [2.0, 5.0]])  # same side / one reference / after
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    flow, logits = dis_prior(refs, offsets, present)
    assert flow.shape == (3, 4, 48, 64) and logits.shape == (3, 3, 48, 64)
    assert float(flow.abs().sum()) == 0 and float(logits.abs().sum()) == 0


@pytest.mark.parametrize("swap", [False, True])
def test_prior_flows_follow_a_known_translation(swap):
    a = texture(64, 80)
    b = shifted(a, 4, -2)  # content moves (+4, -2) px from the earlier reference to the later
    refs = torch.stack([b, a] if swap else [a, b])[None]
    offsets = torch.tensor([[2.0, -2.0]] if swap else [[-2.0, 2.0]])  # the target halfway
    flow, logits = dis_prior(refs, offsets, torch.ones(1, 2))
    px = flow[0].view(2, 2, 64, 80) * torch.tensor([80.0, 64.0]).view(1, 2, 1, 1)  # to pixels
    inner = px[..., 12:-12, 12:-12].flatten(2).median(-1).values  # (slot, xy)
    earlier, later = (1, 0) if swap else (0, 1)
    # target(x) = earlier(x - (2, -1)) = later(x + (2, -1)): the flows point half the motion back / on
    assert torch.allclose(inner[earlier], torch.tensor([-2.0, 1.0]), atol=0.3), inner
    assert torch.allclose(inner[later], torch.tensor([2.0, -1.0]), atol=0.3), inner
    w = torch.softmax(logits[0], 0)[..., 12:-12, 12:-12]
    assert abs(float(w[0].mean()) - float(w[1].mean())) < 0.05 and float(w[2].max()) < 0.02


def test_prior_is_estimated_at_most_prior_side_and_upsampled():
    refs = torch.stack([texture(90, 600), texture(90, 600, 1)])[None]
    flow, logits = dis_prior(refs, torch.tensor([[-1.0, 1.0]]), torch.ones(1, 2), max_side=200)
    assert flow.shape[-2:] == (30, 200) and logits.shape[-2:] == (30, 200)


def test_untrained_decoder_with_prior_is_the_flow_baseline():
    from vidm.eval.baselines import flow_interpolate

    a = texture(56, 72, 3)
    b = shifted(a, 5, 3)
    u8 = [((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy() for x in (a, b)]
    base = flow_interpolate(u8[0], u8[1], 3).astype(np.float32)  # t = 1/4, 1/2, 3/4
    refs = torch.stack([torch.from_numpy(x).permute(2, 0, 1).float() / 127.5 - 1 for x in u8])
    ae = prior_ae()
    with torch.no_grad():
        out = ae.decode(torch.zeros(3, 4, 16, 16), refs[None].repeat(3, 1, 1, 1, 1),
                        torch.tensor([[-1.0, 3.0], [-2.0, 2.0], [-3.0, 1.0]]), latent_sigma=float("inf"))
    got = ((out.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).numpy()
    assert out.shape == (3, 3, 56, 72)
    # the only departures: D(z)'s 1% share and the weight floor
    assert np.abs(got - base).mean() < 2.0, np.abs(got - base).mean()
    ae_plain = prior_ae(prior="none")
    with torch.no_grad():
        plain = ae_plain.decode(torch.zeros(3, 4, 16, 16), refs[None].repeat(3, 1, 1, 1, 1),
                                torch.tensor([[-1.0, 3.0], [-2.0, 2.0], [-3.0, 1.0]]), latent_sigma=float("inf"))
    plain = ((plain.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).numpy()
    assert np.abs(plain - base).mean() > 2 * np.abs(got - base).mean()  # the prior is what does it


def test_bad_prior_name_is_a_config_error():
    with pytest.raises(ConfigError, match="ref_flow_prior"):
        get_preset("autoencoder", "tiny").replace(references=2, ref_flow_prior="raft").validate()


def test_init_skip_lets_a_reshaped_part_start_fresh(tmp_path):
    from vidm.train.loop import _init_from

    old = prior_ae(prior="none")
    old.save_pretrained(tmp_path / "old")
    new = prior_ae(seed=1)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    cfg = new.config.to_dict()
    with pytest.raises(ConfigError, match="do not fit"):
        _init_from(new, str(tmp_path / "old"), "autoencoder", cfg, "t.yaml")
    _init_from(new, str(tmp_path / "old"), "autoencoder", cfg, "t.yaml", ("ref_decoder.",))
    sd, od = new.state_dict(), old.state_dict()
    assert all(torch.equal(sd[k], od[k]) for k in od if not k.startswith("ref_decoder."))
    assert all(torch.equal(sd[k], fresh[k]) for k in sd if k.startswith("ref_decoder."))


def test_latent_fingerprint_ignores_the_sign_of_zero_and_the_decoder():
    # An EMA of a frozen encoder weight turned a -0.0 into 0.0, and `vidm pack` then refused the
    # content model trained on exactly those latents.
    from vidm.models.pretrained import latent_fingerprint

    ae = prior_ae(prior="none")
    w = ae.encoder.state_dict()
    name = next(k for k, v in w.items() if v.is_floating_point() and v.numel() > 1)
    with torch.no_grad():
        ae.encoder.state_dict()[name].view(-1)[0] = 0.0
        zero = latent_fingerprint(ae)
        ae.encoder.state_dict()[name].view(-1)[0] = -0.0
        assert latent_fingerprint(ae) == zero
        ae.decoder.conv_out.weight.add_(1.0)
        assert latent_fingerprint(ae) == zero
        ae.encoder.state_dict()[name].view(-1)[0] = 0.5
        assert latent_fingerprint(ae) != zero  # a real change of the encoder still shows
