"""One sampling path (vidm.diffusion.sampling): the training previews equal the pipeline's window
and first-frame samples for the same weights, seed and settings; a sampler added to the registry
from outside (one function + one entry) runs through the pipeline with known frames bit-exact;
SamplingOptions and the keyword arguments are one thing."""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest
import torch
from einops import rearrange

from test_pipeline import _frames, _tiny_pipeline
from vidm.diffusion import SAMPLERS, get_ancestral_step, get_sigmas_karras, num_evaluations
from vidm.errors import ConfigError
from vidm.pipeline import SamplingOptions

STEPS = 3


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return _tiny_pipeline()


def _stage(cls, pipe, sampler: str, num_samples: int = 2):
    """A training stage around the pipeline's models, set up as after `setup` on a latent cache."""
    cfg = cls.config_cls()
    d = cfg.diffusion
    d.sampler, d.sample_steps, d.num_samples = sampler, STEPS, num_samples
    d.sigma_min, d.sigma_max, d.sigma_data = pipe.config.sigma_min, pipe.config.sigma_max, pipe.config.sigma_data
    accelerator = types.SimpleNamespace(device=pipe.device, autocast=contextlib.nullcontext)
    stage = cls(cfg, accelerator)
    stage.from_cache, stage.ae = True, pipe.autoencoder
    stage.latent_shape = pipe._latent_shape()
    return stage


def _window_batch(n: int = 3, T: int = 5) -> dict:
    g = torch.Generator().manual_seed(4)
    latents = torch.randn(n, T, 4, 4, 4, generator=g)
    return {"latents": latents, "anchor": latents[:, 0].clone(), "times": torch.arange(float(T)).expand(n, -1)}


@pytest.mark.parametrize("sampler", ["heun", "euler_ancestral"])
def test_motion_preview_is_the_pipelines_window_sample(pipe, sampler):
    from vidm.train.motion import MotionStage

    stage = _stage(MotionStage, pipe, sampler)
    batch = _window_batch()
    x0, z = stage.preview_latents(pipe.motion, batch, torch.Generator().manual_seed(7))
    known = torch.zeros(2, 5, dtype=torch.bool)
    known[:, 0] = known[:, -1] = True
    want = pipe.sample_window(batch["latents"][:2], known, batch["times"][:2], batch["anchor"][:2],
                              torch.Generator().manual_seed(7), STEPS, sampler, guidance=1.0)
    assert torch.equal(z, want)
    assert torch.equal(z[known], x0[known])  # the known frames, even with ancestral noise
    # the preview image itself: truth above the sample, the sample decoded from those latents
    video = stage.preview(pipe.motion, batch, torch.Generator().manual_seed(7))[0][2]  # (T, 3, 2H, 2W)
    fake = rearrange(stage.decode_images(want.flatten(0, 1)), "(b t) c h w -> t c h (b w)", b=2)
    assert torch.equal(video[:, :, video.shape[2] // 2:], fake)


def test_content_preview_is_the_pipelines_first_frame_sample(pipe):
    from vidm.train.content import ContentStage

    stage = _stage(ContentStage, pipe, "euler_ancestral", num_samples=3)
    z = stage.preview_latents(pipe.content, torch.Generator().manual_seed(2))
    want = pipe.sample_first_frames(3, torch.Generator().manual_seed(2), STEPS, "euler_ancestral")
    assert torch.equal(z, want)


# A new stochastic sampler: one function (it gets its noise from noise_sampler, which is zero
# at the known frames) and one registry entry (below, via monkeypatch).
@torch.no_grad()
def sample_test_ancestral_midpoint(denoise, x, sigmas, callback=None, noise_sampler=None):
    """Half an Euler step, re-noise, the other half: a made-up stochastic sampler."""
    x = x.float()
    sigmas = sigmas.to(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        x = x + noise_sampler(x) * sigma_up
    return x


@pytest.fixture
def test_sampler(monkeypatch):
    monkeypatch.setitem(SAMPLERS, "test_midpoint", sample_test_ancestral_midpoint)
    return "test_midpoint"


def test_a_registered_sampler_runs_through_the_pipeline_with_known_frames_exact(pipe, test_sampler):
    z = torch.randn(2, 5, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    known = torch.tensor([[True, False, True, False, True], [True, False, False, False, True]])
    times = torch.arange(5.0).expand(2, -1)

    def window(seed):
        return pipe.sample_window(z, known, times, z[:, 0], torch.Generator().manual_seed(seed), STEPS,
                                  test_sampler, guidance=2.0)

    out = window(1)
    assert torch.equal(out[known], z[known])  # bit-exact, noise and guidance notwithstanding
    assert torch.isfinite(out).all() and not torch.equal(out[~known], z[~known])
    assert torch.equal(out, window(1)) and not torch.equal(out, window(2))  # seeded noise
    assert num_evaluations(test_sampler, STEPS) == STEPS  # one call per step: nothing declared
    frames = _frames(3)
    video = pipe.interpolate_video(frames, factor=2, seed=0, options=SamplingOptions(sampler=test_sampler))
    assert video.shape == (1, 5, 16, 16, 3) and np.array_equal(video[0, ::2], frames)


def test_options_object_and_keywords_are_the_same_call(pipe):
    s, e = _frames(2)
    opts = SamplingOptions(steps=2, sampler="euler_ancestral", guidance=2.0, seed=3, samples=2)
    by_keywords = pipe.interpolate(s, e, num_frames=3, samples=2, seed=3, steps=2, sampler="euler_ancestral",
                                   guidance=2.0)
    assert np.array_equal(pipe.interpolate(s, e, num_frames=3, options=opts), by_keywords)
    # a keyword given wins over the options' field
    assert np.array_equal(pipe.interpolate(s, e, num_frames=3, seed=3, options=opts.replace(seed=9)), by_keywords)
    assert np.array_equal(pipe.generate(num_frames=4, options=opts), pipe.generate(
        num_frames=4, num_videos=2, seed=3, steps=2, sampler="euler_ancestral", guidance=2.0))
    resolved = SamplingOptions().resolve(pipe.config)
    assert (resolved.steps, resolved.sampler, resolved.guidance) == (pipe.config.steps, pipe.config.sampler,
                                                                     pipe.config.guidance)
    assert resolved.resolve(pipe.config) == resolved
    for bad in (dict(steps=0), dict(guidance=-1.0), dict(samples=0), dict(sampler="nope")):
        with pytest.raises(ConfigError):
            SamplingOptions(**bad).resolve(pipe.config)


def test_samplers_declare_their_network_calls():
    calls = []
    x = torch.randn(4)
    sigmas = get_sigmas_karras(5)
    for name in ("euler", "heun", "dpmpp_2m", "euler_ancestral"):
        calls.clear()
        SAMPLERS[name](lambda y, s: calls.append(1) or y * 0.5, x, sigmas, generator=torch.Generator())
        assert len(calls) == num_evaluations(name, 5), name
