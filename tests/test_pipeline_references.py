"""The pipeline with a reference autoencoder: which frames each output frame is built from, output
at the input's own size, given frames exact, determinism, old pipelines unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidm.errors import ConfigError
from vidm.models import AutoencoderConfig, AutoencoderKL, ContentUNet, ContentUNetConfig, MotionUNet, MotionUNetConfig
from vidm.pipeline import PipelineConfig, VideoPipeline
from vidm.pipeline.refdecode import reference_plan

SIZE = 16


def _pipe(hand_set: bool = False) -> VideoPipeline:
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig(downsample_factor=4, base_channels=16, ch_mult=(1, 1, 1), num_res_blocks=1,
                                         norm_groups=4, head_dim=16, references=2, ref_channels=8))
    unet = dict(model_channels=16, ch_mult=(1, 1), num_res_blocks=1, attn_levels=(1,), head_dim=16, norm_groups=4)
    content = ContentUNet(ContentUNetConfig(**unet))
    motion = MotionUNet(MotionUNetConfig(temporal_levels=(0, 1), **unet))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (ae, content, motion):
            for p in m.parameters():
                if p.ndim > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
        if hand_set:  # zero flow, all weight on reference slot 0, nothing refined
            head = ae.ref_decoder.coarse.head
            head.weight.zero_(), head.bias.zero_()
            head.bias[4:7] = torch.tensor([100.0, -100.0, -100.0])
            ae.ref_decoder.refine.out.weight.zero_(), ae.ref_decoder.refine.out.bias.zero_()
    cfg = PipelineConfig(size=SIZE, window=5, context=2, steps=2, max_span=8.0)
    return VideoPipeline(ae, content, motion, cfg, device="cpu", dtype="fp32")


def _frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_reference_plan_follows_the_rule():
    # in-betweens: nearest given on both sides; past the last given: previous frame + first frame
    assert reference_plan(5, [0, 4]) == [(1, [0, 4]), (2, [0, 4]), (3, [0, 4])]
    assert reference_plan(7, [0, 3, 6]) == [(1, [0, 3]), (2, [0, 3]), (4, [3, 6]), (5, [3, 6])]
    assert reference_plan(5, [0, 1]) == [(2, [1, 0]), (3, [2, 0]), (4, [3, 0])]
    assert reference_plan(3, []) == [(0, []), (1, [0]), (2, [1, 0])]
    with pytest.raises(ValueError):
        reference_plan(3, [5])


@pytest.mark.parametrize("h,w", [(16, 16), (45, 80), (33, 47)])
def test_interpolate_keeps_the_inputs_size(h, w):
    pipe = _pipe()
    a, b = _frames(2, h, w)
    out = pipe.interpolate(a, b, num_frames=3, seed=0)
    assert out.shape == (1, 3, h, w, 3) and out.dtype == np.uint8


def test_hand_set_decoder_copies_the_first_reference_at_full_resolution():
    pipe = _pipe(hand_set=True)
    a, b = _frames(2, 90, 160, seed=3)
    out = pipe.interpolate(a, b, num_frames=3, seed=0)
    assert all(np.array_equal(f, a) for f in out[0])  # real pixels, not a 16x16 re-render
    video = pipe.interpolate_video(np.stack([a, b, a]), factor=2)
    assert np.array_equal(video[0, 1], a) and np.array_equal(video[0, 3], b)  # slot 0 = the frame before
    assert np.array_equal(video[0, ::2], np.stack([a, b, a]))
    fut = pipe.predict(np.stack([a, b]), num_future=3)
    assert all(np.array_equal(f, b) for f in fut[0])  # each frame from the one before it


def test_same_seed_same_frames_and_generation_at_model_size():
    pipe = _pipe()
    a, b = _frames(2, 40, 56, seed=4)
    assert np.array_equal(pipe.interpolate(a, b, 3, seed=2), pipe.interpolate(a, b, 3, seed=2))
    gen = pipe.generate(num_frames=4, num_videos=2, seed=1)
    assert gen.shape == (2, 4, SIZE, SIZE, 3)


def test_oracle_and_reference_only_methods():
    pipe = _pipe()
    a, b = _frames(2, 32, 48, seed=5)
    truth = _frames(3, 32, 48, seed=6)
    assert pipe.oracle_batch(a[None], b[None], truth[None]).shape == (1, 1, 3, 32, 48, 3)
    assert pipe.references_only_batch(a[None], b[None], 3).shape == (1, 1, 3, 32, 48, 3)


def test_decode_latent_sigma_is_validated():
    with pytest.raises(ConfigError, match="decode_latent_sigma"):
        PipelineConfig(decode_latent_sigma=-1.0).validate()
    with pytest.raises(ConfigError, match="decode_latent_sigma"):
        PipelineConfig(decode_latent_sigma=float("nan")).validate()


def test_bundled_pipelines_are_selectable_by_name(tmp_path, monkeypatch):
    from vidm.pipeline.pipeline import bundled_models, default_model_dir, resolve_model

    assert "synth-tiny" in bundled_models()
    assert resolve_model("synth-tiny") == default_model_dir().parent / "synth-tiny"
    assert resolve_model(None) == default_model_dir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synth-tiny").mkdir()  # a folder of that name in the working directory wins
    assert resolve_model("synth-tiny") == tmp_path.joinpath("synth-tiny").relative_to(tmp_path)
