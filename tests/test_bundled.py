"""The bundled pretrained pipeline (vidm/pretrained/synth-tiny) and the README quickstart on it:
it ships complete and small, is the default --model, and samples reproducibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidm.pipeline import VideoPipeline
from vidm.pipeline.config import STAGES
from vidm.pipeline.pipeline import default_model_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def bundled() -> VideoPipeline:
    return VideoPipeline.from_pretrained(device="cpu")


def test_bundle_is_complete_fp16_and_under_30_mb():
    from safetensors import safe_open

    root = default_model_dir()
    assert (root / "pipeline.json").is_file() and (root / "README.md").is_file()
    total = 0
    for stage in STAGES:
        weights = root / stage / "model.safetensors"
        assert (root / stage / "config.json").is_file()
        total += weights.stat().st_size
        with safe_open(str(weights), "pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        assert dtypes == {"F16"}, (stage, dtypes)
    assert total <= 30 * 2**20


def test_bundle_settings_fit_a_gap_of_8_in_one_window(bundled):
    cfg = bundled.config
    assert cfg.size == 64 and cfg.window >= 9
    assert cfg.steps == 20 and cfg.guidance > 1


def test_quickstart_interpolate_on_the_default_model(tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip, read_image

    out, strip = tmp_path / "out.mp4", tmp_path / "strip.png"
    rc = main(["interpolate", str(EXAMPLES / "a.png"), str(EXAMPLES / "b.png"), "--frames", "7", "-o", str(out),
               "--strip", str(strip), "--steps", "4", "--quiet"])
    assert rc == 0
    video = read_clip(out)
    assert video.shape == (9, 64, 64, 3)
    assert read_image(strip).shape[0] >= 64


def test_generate_32_frames_on_the_default_model(tmp_path):
    from vidm.cli import main
    from vidm.video import read_clip

    out = tmp_path / "g.mp4"
    assert main(["generate", "--frames", "32", "--steps", "2", "-o", str(out), "--quiet"]) == 0
    assert read_clip(out).shape == (32, 64, 64, 3)


def test_same_seed_same_bytes_other_seed_other_frames(bundled):
    from vidm.video import read_image

    a, b = read_image(EXAMPLES / "a.png"), read_image(EXAMPLES / "b.png")
    first = bundled.interpolate(a, b, num_frames=7, seed=3, steps=4)
    again = bundled.interpolate(a, b, num_frames=7, seed=3, steps=4)
    other = bundled.interpolate(a, b, num_frames=7, seed=4, steps=4)
    assert first.tobytes() == again.tobytes()
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 0.5


def test_example_inbetweens_beat_the_crossfade_against_ground_truth(bundled):
    # examples/a.png and b.png are frames 4 and 12 of synthetic video 2 of seed 7 (never trained on)
    from vidm.data.synth import render_video
    from vidm.eval.baselines import crossfade
    from vidm.eval.metrics import psnr
    from vidm.eval.positions import object_position_error
    from vidm.video import read_image

    frames, meta = render_video(7, 2, 24, 64)
    a, b = read_image(EXAMPLES / "a.png"), read_image(EXAMPLES / "b.png")
    assert np.array_equal(a, frames[4]) and np.array_equal(b, frames[12])
    assert bundled.config.infill_init == "splat"
    truth, idx = frames[5:12], np.arange(5, 12)
    mids = bundled.interpolate(a, b, num_frames=7, seed=0, steps=4)[0]
    fade = crossfade(a, b, 7)
    pos = [object_position_error(x, meta, idx).mean for x in (mids, fade)]
    db = [float(psnr(x, truth).mean()) for x in (mids, fade)]
    assert pos[0] < pos[1] - 2 and db[0] > db[1] + 1, (pos, db)  # measured: 7.6 vs 11.6 px, 22.3 vs 19.7 dB
