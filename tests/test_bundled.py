"""The bundled pretrained pipelines (vidm/pretrained/real-tiny, the default, trained on real
footage; synth-tiny, the synthetic world) and the README quickstart on the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidm.pipeline import VideoPipeline
from vidm import stages
from vidm.bundled import DEFAULT_MODEL
from vidm.pipeline.pipeline import bundled_models, resolve_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FOOTAGE = ROOT.parent / "shared" / "footage"
# examples/a.png, b.png: frames 56 and 64 of cityCC0.mpg (CC0), the centre 480x270 crop
EXAMPLE_CLIP, EXAMPLE_START, EXAMPLE_CROP = "cityCC0.mpg", 56, (67, 120, 270, 480)  # y0, x0, h, w


@pytest.fixture(scope="module")
def bundled() -> VideoPipeline:
    return VideoPipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def synth() -> VideoPipeline:
    return VideoPipeline.from_pretrained("synth-tiny", device="cpu")


def test_the_default_is_real_tiny_and_synth_tiny_stays_selectable():
    assert DEFAULT_MODEL == "real-tiny"
    assert {"real-tiny", "synth-tiny"} <= set(bundled_models())


@pytest.mark.parametrize("name", ["real-tiny", "synth-tiny"])
def test_bundle_is_complete_fp16_and_under_30_mb(name):
    from safetensors import safe_open

    root = resolve_model(name)
    assert (root / "pipeline.json").is_file() and (root / "README.md").is_file()
    total = 0
    for stage in stages.names(required=True):
        weights = root / stage / "model.safetensors"
        assert (root / stage / "config.json").is_file()
        total += weights.stat().st_size
        with safe_open(str(weights), "pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        assert dtypes == {"F16"}, (stage, dtypes)
    assert total <= 30 * 2**20


def test_bundle_settings_fit_a_gap_of_8_in_one_window(bundled, synth):
    for cfg in (bundled.config, synth.config):
        assert cfg.size == 64 and cfg.window >= 9
    # real-tiny samples 10 steps without guidance: its held-out in-betweens score the same as at
    # 20 steps with guidance 1.5 (card), at a quarter of the network calls
    assert (bundled.config.steps, bundled.config.guidance) == (10, 1.0)
    assert synth.config.steps == 20 and synth.config.guidance > 1
    assert bundled.uses_references and not synth.uses_references
    assert bundled.autoencoder.config.ref_flow_prior == "dis"


def test_quickstart_interpolate_on_the_default_model(tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip, read_image

    out, strip = tmp_path / "out.mp4", tmp_path / "strip.png"
    rc = main(["interpolate", str(EXAMPLES / "a.png"), str(EXAMPLES / "b.png"), "--frames", "7", "-o", str(out),
               "--strip", str(strip), "--steps", "4", "--quiet"])
    assert rc == 0
    video = read_clip(out)
    assert video.shape == (9, 270, 480, 3)  # the inputs' own size, not the model's 64x64
    assert read_image(strip).shape[0] >= 270


def test_generate_32_frames_on_the_default_model(tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip

    out = tmp_path / "g.mp4"
    assert main(["generate", "--frames", "32", "--steps", "2", "-o", str(out), "--quiet"]) == 0
    assert read_clip(out).shape == (32, 64, 64, 3)


def test_same_seed_same_bytes_other_seed_other_frames(bundled):
    from vidm.video import read_image

    a, b = read_image(EXAMPLES / "a.png"), read_image(EXAMPLES / "b.png")
    first = bundled.interpolate(a, b, num_frames=3, seed=3, steps=4)
    again = bundled.interpolate(a, b, num_frames=3, seed=3, steps=4)
    other = bundled.interpolate(a, b, num_frames=3, seed=4, steps=4)
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)  # the sampled latents steer the decoder


def test_identical_frames_come_back(bundled):
    from vidm.eval.metrics import psnr
    from vidm.video import read_image

    a = read_image(EXAMPLES / "a.png")
    mids = bundled.interpolate(a, a, num_frames=7, seed=0, steps=4)[0]
    assert mids.shape == (7, 270, 480, 3)
    assert float(psnr(mids, np.broadcast_to(a, mids.shape)).min()) >= 40


def test_example_inbetweens_against_the_true_frames(bundled):
    from vidm.eval.baselines import crossfade, flow_interpolate
    from vidm.eval.metrics import psnr
    from vidm.video import read_clip, read_image

    clip = FOOTAGE / EXAMPLE_CLIP
    if not clip.is_file():
        pytest.skip(f"{clip} not here (../shared/footage/fetch.sh rebuilds it)")
    y0, x0, h, w = EXAMPLE_CROP
    truth = read_clip(clip, start=EXAMPLE_START, num_frames=9)[:, y0:y0 + h, x0:x0 + w]
    a, b = read_image(EXAMPLES / "a.png"), read_image(EXAMPLES / "b.png")
    assert np.array_equal(a, truth[0]) and np.array_equal(b, truth[8])
    mids = bundled.interpolate(a, b, num_frames=7, seed=0, steps=4)[0]
    db = [float(psnr(x, truth[1:8]).mean()) for x in (mids, crossfade(a, b, 7), flow_interpolate(a, b, 7))]
    # measured (4 steps): 31.13 dB; cross-fade 21.58, DIS flow 31.23
    assert db[0] > db[1] + 5 and db[0] > db[2] - 0.5, db


def test_synth_tiny_inbetweens_beat_the_crossfade_against_ground_truth(synth):
    # frames 4 and 12 of synthetic video 2 of seed 7 (never trained on)
    from vidm.data.synth import render_video
    from vidm.eval.baselines import crossfade
    from vidm.eval.metrics import psnr
    from vidm.eval.positions import object_position_error

    frames, meta = render_video(7, 2, 24, 64)
    a, b = frames[4], frames[12]
    assert synth.config.infill_init == "splat"
    truth, idx = frames[5:12], np.arange(5, 12)
    mids = synth.interpolate(a, b, num_frames=7, seed=0, steps=4)[0]
    fade = crossfade(a, b, 7)
    pos = [object_position_error(x, meta, idx).mean for x in (mids, fade)]
    db = [float(psnr(x, truth).mean()) for x in (mids, fade)]
    assert pos[0] < pos[1] - 2 and db[0] > db[1] + 1, (pos, db)  # measured: 7.6 vs 11.6 px, 22.3 vs 19.7 dB
