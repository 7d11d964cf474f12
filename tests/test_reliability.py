"""Reliability (the issue's items 6 and 8-12): bounded video reads, validated numbers and images
read as viewers show them, `vidm pack` settings that travel with the weights, one-line errors,
signals that do not wait for a long step, and the small things (ValueError subclasses, clean
warnings, true sizes, ignored flags, file modes, exit codes, presets from anywhere, plurals).

Everything here is small and made in the test; sampling uses the bundled model with --steps 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from video_helpers import decode_index, index_frames
from vidm.cli import main
from vidm.pipeline.pipeline import resolve_model
from vidm.video import read_clip, read_image, write_video

BUNDLED = resolve_model("synth-tiny")  # these checks need a plain-decoder pipeline with known records
SAMPLE = ["--steps", "1", "--quiet"]


def _png(path, arr) -> str:
    from PIL import Image

    Image.fromarray(arr).save(path)
    return str(path)


def _pair(tmp_path, h=64, w=64):
    rng = np.random.default_rng(0)
    return (_png(tmp_path / "a.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
            _png(tmp_path / "b.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))


def _one_line_error(rc, capsys, match=None) -> str:
    err = capsys.readouterr().err
    assert rc == 1, f"exit status {rc}: {err}"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("vidm: error: ") and "Traceback" not in err, err
    if match is not None:
        assert match in lines[-1], lines[-1]
    return lines[-1]


def _model_copy(tmp_path, **changes) -> str:
    """The bundled pipeline folder with pipeline.json values changed."""
    dst = tmp_path / "model"
    shutil.copytree(BUNDLED, dst)
    cfg = json.loads((dst / "pipeline.json").read_text())
    cfg.update(changes)
    (dst / "pipeline.json").write_text(json.dumps(cfg))
    return str(dst)


# ============================================================== 6. bounded video reads


def test_predict_with_context_decodes_only_the_last_frames(tmp_path, monkeypatch):
    """Was: the whole video decoded to add frames after its last --context ones."""
    import vidm.video

    video = write_video(tmp_path / "long.mp4", index_frames(60, 48, 64), fps=8)  # indices up to 63 (6 bits)
    converted = []
    real = vidm.video._frame_to_array
    monkeypatch.setattr(vidm.video, "_frame_to_array", lambda f, s: converted.append(1) or real(f, s))
    out = tmp_path / "more.mp4"
    assert main(["predict", "--video", str(video), "--frames", "2", "--context", "4", "-o", str(out), *SAMPLE]) == 0
    assert len(converted) <= 4 + 1, f"{len(converted)} frames decoded to pixels for --context 4"
    back = read_clip(out)
    assert len(back) == 6 and decode_index(back[:4]) == [56, 57, 58, 59]


def test_read_last_frames_keeps_at_most_n_frames(tmp_path):
    from vidm.video import read_last_frames

    video = write_video(tmp_path / "v.mp4", index_frames(40, 48, 64), fps=8)
    assert decode_index(read_last_frames(video, 3)) == [37, 38, 39]
    assert len(read_last_frames(video, 100)) == 40  # shorter than asked: all of it
    folder = write_video(tmp_path / "frames", index_frames(5, 48, 64))
    assert decode_index(read_last_frames(folder, 2)) == [3, 4]


def test_max_frames_means_at_most(tmp_path):
    """Was: --max-frames 30 on a 24-frame video an error."""
    video = write_video(tmp_path / "short.mp4", index_frames(6, 48, 64), fps=8)
    out = tmp_path / "x2.mp4"
    assert main(["interpolate", "--video", str(video), "--factor", "2", "--max-frames", "30", "-o", str(out),
                 *SAMPLE]) == 0
    assert len(read_clip(out)) == 11
    assert len(read_clip(video, num_frames=30, partial=True)) == 6


# ============================================================== 8. numbers and images


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_guidance_must_be_finite_and_in_range(tmp_path, capsys, value):
    """Was: --guidance nan gave all-black frames and exit 0."""
    a, b = _pair(tmp_path)
    out = tmp_path / "o.mp4"
    _one_line_error(main(["interpolate", a, b, "--frames", "1", "--guidance", value, "-o", str(out), *SAMPLE]),
                    capsys, "--guidance")
    assert not out.exists()


def test_sigma_data_zero_in_pipeline_json_is_refused(tmp_path, capsys):
    """Was: pipeline.json sigma_data 0 gave all-black frames and exit 0."""
    a, b = _pair(tmp_path)
    out = tmp_path / "o.mp4"
    rc = main(["interpolate", a, b, "--frames", "1", "--model", _model_copy(tmp_path, sigma_data=0), "-o", str(out),
               *SAMPLE])
    _one_line_error(rc, capsys, "sigma_data")
    assert not out.exists()


def test_non_finite_samples_are_never_written(tmp_path, capsys, monkeypatch):
    """Whatever makes the sampler diverge, NaN frames are an error, not black frames."""
    from vidm.pipeline.pipeline import VideoPipeline

    monkeypatch.setattr(VideoPipeline, "sample_window", lambda self, x, *a, **k: torch.full_like(x, float("nan")))
    a, b = _pair(tmp_path)
    out = tmp_path / "o.mp4"
    _one_line_error(main(["interpolate", a, b, "--frames", "1", "-o", str(out), *SAMPLE]), capsys, "non-finite")
    assert not out.exists()


def test_images_are_read_as_viewers_show_them(tmp_path):
    """Was: 16-bit greyscale PNG all white, float TIFF all black, EXIF orientation ignored."""
    from PIL import Image

    ramp = np.linspace(0, 1, 64 * 32).reshape(32, 64)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    g16 = read_image(tmp_path / "g16.png")
    assert g16.shape == (32, 64, 3) and g16.dtype == np.uint8
    assert np.abs(g16[..., 0].astype(float) - ramp * 255).max() <= 1

    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tif")
    f = read_image(tmp_path / "f.tif")
    assert np.abs(f[..., 1].astype(float) - ramp * 255).max() <= 1

    photo = np.zeros((10, 20, 3), np.uint8)  # stored 20 wide, 10 high: a top strip red
    photo[:3] = (255, 0, 0)
    im = Image.fromarray(photo)
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: shown turned 90 degrees clockwise
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (20, 10, 3)  # upright: 10 wide, 20 high
    assert shown[:, -3:, 0].mean() > 200 and shown[:, :5, 0].mean() < 60  # the red strip now on the right


# ============================================================== 9. vidm pack


@pytest.fixture(scope="module")
def plain_stages(tmp_path_factory):
    """The bundled stages saved on their own: no training record, no config.yaml, no pipeline.json."""
    from vidm.models.pretrained import load_pretrained

    root = tmp_path_factory.mktemp("plain")
    for s in ("autoencoder", "content", "motion"):
        load_pretrained(BUNDLED / s).save_pretrained(root / s / "model")
    return root


def _stages(root) -> list[str]:
    return [x for s in ("autoencoder", "content", "motion") for x in (f"--{s}", str(Path(root) / s))]


def test_pack_without_a_record_needs_the_settings(plain_stages, tmp_path, capsys):
    """Was: silently the defaults (max_span 8 for the bundled model, trained at 16)."""
    out = tmp_path / "p"
    _one_line_error(main(["pack", *_stages(plain_stages), "-o", str(out)]), capsys, "no record")
    assert not out.exists()
    assert main(["pack", *_stages(plain_stages), "--size", "64", "--window", "9", "--max-span", "16",
                 "--sigma-data", "0.5", "-o", str(out)]) == 0
    assert json.loads((out / "pipeline.json").read_text())["max_span"] == 16
    record = json.loads((out / "motion" / "config.json").read_text())["training"]
    assert record["window"] == 9 and record["max_span"] == 16  # travels with the packed stage


def test_pack_of_the_bundled_stages_keeps_their_settings(tmp_path):
    out = tmp_path / "p"
    assert main(["pack", *[x for s in ("autoencoder", "content", "motion") for x in (f"--{s}", str(BUNDLED / s))],
                 "-o", str(out)]) == 0
    mine, bundled = (json.loads((p / "pipeline.json").read_text()) for p in (out, BUNDLED))
    for k in ("size", "window", "max_span", "frame_step", "sigma_data", "context"):
        assert mine[k] == bundled[k], k


@pytest.mark.parametrize("extra, match", [(["--size", "0"], "--size"), (["--context", "99"], "context"),
                                          (["--guidance", "nan"], "--guidance"), (["--fps", "0"], "--fps"),
                                          (["--window", "12"], "trained with window 9"),
                                          (["--sigma-data", "1.0"], "trained with sigma_data 0.5")])
def test_pack_refuses_bad_or_contradicting_values(tmp_path, capsys, extra, match):
    out = tmp_path / "p"
    rc = main(["pack", *[x for s in ("autoencoder", "content", "motion") for x in (f"--{s}", str(BUNDLED / s))],
               *extra, "-o", str(out)])
    _one_line_error(rc, capsys, match)
    assert not out.exists()


def _with_record(src: Path, dst: Path, **record) -> str:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["training"] = record
    (dst / "config.json").write_text(json.dumps(meta))
    return str(dst)


def test_pack_checks_the_latents_came_from_the_autoencoder(plain_stages, tmp_path, capsys):
    """Was: content and motion trained on another autoencoder's latents packed without a word."""
    from vidm.models.pretrained import latent_fingerprint, load_pretrained

    ae = load_pretrained(plain_stages / "autoencoder" / "model")
    base = {"sigma_data": 0.5, "size": 64, "latent_scale": ae.config.latent_scale,
            "autoencoder": latent_fingerprint(ae)}
    motion = {**base, "window": 9, "max_span": 16.0, "frame_step": 1.0}
    content = _with_record(plain_stages / "content" / "model", tmp_path / "content", stage="content", **base)
    good = _with_record(plain_stages / "motion" / "model", tmp_path / "motion", stage="motion", **motion)
    other = _with_record(plain_stages / "motion" / "model", tmp_path / "motion2", stage="motion",
                         **{**motion, "autoencoder": "0123456789abcdef"})
    scaled = _with_record(plain_stages / "motion" / "model", tmp_path / "motion3", stage="motion",
                          **{**motion, "latent_scale": 1.0, "autoencoder": None})
    ae_dir = str(plain_stages / "autoencoder")
    for motion_dir, match in ((other, "another autoencoder"), (scaled, "latents scaled by 1")):
        out = tmp_path / "bad"
        rc = main(["pack", "--autoencoder", ae_dir, "--content", content, "--motion", motion_dir, "-o", str(out)])
        _one_line_error(rc, capsys, match)
        assert not out.exists()
    out = tmp_path / "good"
    assert main(["pack", "--autoencoder", ae_dir, "--content", content, "--motion", good, "-o", str(out)]) == 0
    assert json.loads((out / "pipeline.json").read_text())["max_span"] == 16


@pytest.mark.parametrize("key, value", [("context", 0), ("context", 50), ("window", 100), ("frame_step", 0),
                                        ("max_span", 0), ("size", "abc"), ("size", 0), ("size", -64),
                                        ("guidance", "x"), ("guidance", None), ("steps", 2.5), ("fps", 0),
                                        ("sigma_data", 0), ("sigma_max", float("inf")), ("sampler", 3)])
def test_pipeline_json_values_are_type_and_range_checked(key, value):
    from vidm.errors import ConfigError
    from vidm.pipeline import PipelineConfig

    d = {**json.loads((BUNDLED / "pipeline.json").read_text()), key: value}
    with pytest.raises(ConfigError, match=key):
        PipelineConfig.from_dict(d)


# ============================================================== 10. one-line errors


@pytest.mark.parametrize("key, value", [("size", "abc"), ("size", 0), ("size", -64), ("guidance", "x"),
                                        ("guidance", None), ("steps", 2.5)])
def test_bad_pipeline_json_is_one_line(tmp_path, capsys, key, value):
    a, b = _pair(tmp_path)
    out = tmp_path / "o.mp4"
    rc = main(["interpolate", a, b, "--frames", "1", "--model", _model_copy(tmp_path, **{key: value}), "-o", str(out),
               "--quiet"])
    _one_line_error(rc, capsys, key)


def test_huge_seed_is_one_line(tmp_path, capsys):
    a, b = _pair(tmp_path)
    _one_line_error(main(["interpolate", a, b, "--frames", "1", "--seed", "99999999999999999999",
                          "-o", str(tmp_path / "o.mp4"), *SAMPLE]), capsys, "--seed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cache_latents_on_cuda_without_cuda_is_one_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    write_video(tmp_path / "data" / "v.mp4", index_frames(4, 64, 64), fps=8)
    out = tmp_path / "cache"
    rc = main(["data", "cache-latents", "--autoencoder", str(BUNDLED / "autoencoder"), "--data",
               str(tmp_path / "data"), "--out", str(out), "--device", "cuda"])
    _one_line_error(rc, capsys, "cuda")
    assert not out.exists()


def test_bench_models_unknown_dtype_is_one_line(capsys):
    _one_line_error(main(["bench", "models", "--presets", "tiny", "--dtypes", "fp64"]), capsys, "fp64")


# ---------------------------------------------------------------------- training runs

TRAIN_CONFIG = """
stage: motion
run: {name: run, steps: 3, mixed_precision: "no", log_every: 1, sample_every: 0, val_every: 0,
      checkpoint_every: 1, keep_checkpoints: 3, progress: false}
optim: {lr: 1.0e-3, warmup_steps: 1}
model: {preset: null, model_channels: 16, ch_mult: [1, 2], num_res_blocks: 1, attn_levels: [1],
        temporal_levels: [1], head_dim: 16, norm_groups: 4}
data: {num_frames: 4, stride: [1, 2], batch_size: 2, val_clips: 1}
diffusion: {sample_steps: 2, num_samples: 1}
"""

# A step that takes minutes: the loss of every step after the first sleeps (as a huge batch would
# compute), so a signal arrives in the middle of a step.
SLOW_STEP = """
import sys, time
from pathlib import Path
import vidm.train.motion as m
run = Path(sys.argv[1])
orig = m.MotionStage.loss
def loss(self, *a, **k):
    if (run / "model" / "config.json").exists():
        time.sleep(300)
    return orig(self, *a, **k)
m.MotionStage.loss = loss
sys.exit(m.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    from vidm.data.latents import write_cache

    root = tmp_path_factory.mktemp("train")
    g = torch.Generator().manual_seed(0)

    def entries():
        for i in range(4):
            base, drift = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
            yield f"v{i}.mp4", base + 0.2 * torch.arange(8.0).view(8, 1, 1, 1) * drift, {"fps": 8.0}

    write_cache(root / "cache", entries(), {"autoencoder": None, "latent_scale": 1.0, "size": [32, 32]})
    (root / "motion.yaml").write_text(TRAIN_CONFIG)
    return root


def _train_argv(root, name, *extra):
    return ["--config", str(root / "motion.yaml"), "--name", name, f"run.output_dir={root / 'runs'}",
            f"data.latents={root / 'cache'}", *extra]


def _slow_run(root, name, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SLOW_STEP, str(root / "runs" / name),
                             *_train_argv(root, name, *extra)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, timeout=180):
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended ({proc.returncode}) before {path} appeared: {proc.stderr.read()}")
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)
    time.sleep(0.5)  # now inside step 2


def _ended(proc, within: float):
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {within} s after the signal: {err}")
    return proc.returncode, err


def test_second_ctrl_c_stops_at_once_in_one_line(train_root):
    """Was: a second Ctrl-C raised KeyboardInterrupt wherever the loop was: a traceback."""
    proc = _slow_run(train_root, "twice")
    _wait_for(train_root / "runs" / "twice" / "model" / "config.json", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rc, err = _ended(proc, 30)
    assert rc == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "stopped at once without saving" in last and "step-0000001" in last, err
    assert (train_root / "runs" / "twice" / "checkpoints" / "step-0000001" / "train_state.json").is_file()


def test_sigterm_during_a_long_step_exits_within_the_grace(train_root):
    """Was: SIGTERM honoured only between steps (8 minutes for a huge batch)."""
    run = train_root / "runs" / "term"
    proc = _slow_run(train_root, "term", "run.stop_timeout=2")
    _wait_for(run / "model" / "config.json", proc)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    rc, err = _ended(proc, 30)
    assert time.time() - t0 < 20
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "did not finish within 2 s" in last and "step-0000001" in last, err
    assert [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-0000001"]
    assert (run / "checkpoints" / "step-0000001" / "train_state.json").is_file()


@pytest.fixture(scope="module")
def short_run(train_root):
    """One in-process run of 1 step with 8 examples per step (the data has 3) and 1 kB of memory
    said to be available: (run folder, stderr)."""
    from vidm.train import loop
    from vidm.train.motion import main as train_main

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(loop, "_available_memory", lambda device: 1000)
        rc = train_main(_train_argv(train_root, "short", "run.steps=1", "data.batch_size=8"))
    assert rc == 0, err.getvalue()
    return train_root / "runs" / "short", err.getvalue()


def test_batch_is_checked_against_data_and_memory_before_step_one(short_run):
    _, err = short_run
    assert "more than the 3 training examples" in err, err
    assert "needs about" in err and "GiB (estimated), more than the 0.0 GiB available" in err, err


def test_training_exports_the_settings_pack_needs(short_run):
    run, _ = short_run
    record = json.loads((run / "model" / "config.json").read_text())["training"]
    assert record == {"stage": "motion", "sigma_data": 0.5, "size": 32, "latent_scale": 1.0, "autoencoder": None,
                      "window": 4, "stride": [1, 2], "max_span": 6.0, "frame_step": 1.0}


# ============================================================== 12. the small things


def test_input_errors_are_value_errors():
    from vidm.errors import ConfigError, NotEnoughFramesError, ShapeError, VidmError

    from vidm.pipeline import PipelineConfig

    for cls in (ConfigError, ShapeError, NotEnoughFramesError):
        assert issubclass(cls, ValueError) and issubclass(cls, VidmError)
    with pytest.raises(ValueError):
        PipelineConfig(size=0).validate()


def test_warnings_are_one_clean_line_in_width_x_height(tmp_path):
    code = ("import numpy as np; from vidm.video import write_video; "
            f"write_video({str(tmp_path / 'odd.mp4')!r}, np.zeros((2, 33, 47, 3), np.uint8))")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert err.strip().splitlines() == [f"vidm: warning: {tmp_path / 'odd.mp4'}: 47x33 padded to 48x34 "
                                        f"(yuv420p needs even sizes)"], err


def test_training_skip_message_is_one_clean_line(tmp_path):
    from vidm.data.dataset import VideoFolder
    from vidm.errors import VidmWarning

    for i in range(2):
        write_video(tmp_path / f"{i}.mp4", index_frames(6, 16, 16), fps=8)
    ds = VideoFolder(tmp_path, num_frames=4, size=16, seed=0)
    (tmp_path / "0.mp4").write_bytes(b"broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds[ds.paths.index(str(tmp_path / "0.mp4"))]
    (w,) = [w for w in caught if "skipped while training" in str(w.message)]
    assert issubclass(w.category, VidmWarning)
    line = warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
    assert line.count("\n") == 1 and line.startswith("vidm: warning: ") and "warn(" not in line


def test_odd_size_output_says_the_size_written(tmp_path, capsys):
    """Was: 'wrote o33.mp4 (33x47)' for a file that is 34x48 (and said in HxW in the warning)."""
    a, b = _pair(tmp_path, 33, 47)
    out = tmp_path / "o33.mp4"
    assert main(["interpolate", a, b, "--frames", "1", "-o", str(out), *SAMPLE]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out} (3 frames, 48x34," in said, said
    assert read_clip(out).shape[1:3] == (34, 48)


def test_fps_zero_is_an_error(tmp_path, capsys):
    """Was: --fps 0 silently became 8."""
    a, b = _pair(tmp_path)
    _one_line_error(main(["interpolate", a, b, "--frames", "1", "--fps", "0", "-o", str(tmp_path / "o.mp4"),
                          *SAMPLE]), capsys, "--fps")


def test_flags_a_mode_ignores_are_errors(tmp_path, capsys):
    a, b = _pair(tmp_path)
    video = write_video(tmp_path / "v.mp4", index_frames(4, 48, 64), fps=8)
    _one_line_error(main(["interpolate", "--video", str(video), "--factor", "2", "--frames", "5",
                          "-o", str(tmp_path / "o.mp4"), *SAMPLE]), capsys, "--frames")
    _one_line_error(main(["interpolate", a, b, "--max-frames", "5", "-o", str(tmp_path / "o.mp4"), *SAMPLE]),
                    capsys, "--max-frames")
    assert not (tmp_path / "o.mp4").exists()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_outputs_get_the_usual_modes(tmp_path):
    """Was: folders 0700 and safetensors files 0600 (nobody else could read them)."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "p"
        assert main(["pack", *[x for s in ("autoencoder", "content", "motion") for x in (f"--{s}", str(BUNDLED / s))],
                     "-o", str(out)]) == 0
        frames = write_video(tmp_path / "frames", index_frames(2, 16, 16))
        (tmp_path / "data").mkdir()
        write_video(tmp_path / "data" / "v.mp4", index_frames(2, 64, 64), fps=8)
        assert main(["data", "cache-latents", "--autoencoder", str(BUNDLED / "autoencoder"), "--data",
                     str(tmp_path / "data"), "--out", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    finally:
        os.umask(old)
    assert _mode(tmp_path / "cache") == 0o755 and _mode(tmp_path / "cache" / "shard-00000.safetensors") == 0o644
    assert _mode(out) == 0o755 and _mode(out / "motion") == 0o755 and _mode(frames) == 0o755
    assert _mode(out / "motion" / "model.safetensors") == 0o644 and _mode(out / "pipeline.json") == 0o644


def test_usage_errors_exit_1_in_one_line(capsys):
    """Was: argparse's exit status 2 (and a usage block), where README promises 1."""
    _one_line_error(main(["generate", "--frames", "x", "-o", "o.mp4"]), capsys, "--frames")
    _one_line_error(main(["generate", "--no-such-flag", "-o", "o.mp4"]), capsys, "--no-such-flag")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "exit status 1" in readme and "usage error" in readme


def test_config_presets_resolve_from_any_folder(tmp_path, monkeypatch):
    """Was: --config configs/motion/tiny.yaml only inside the checkout."""
    from vidm.train.config import MotionTrainConfig, load_config

    monkeypatch.chdir(tmp_path)
    for name in ("configs/motion/tiny.yaml", "tiny", "motion/tiny.yaml"):
        cfg = load_config(MotionTrainConfig, name)
        assert cfg.stage == "motion" and cfg.run.name == "motion-tiny", name


def test_counts_of_one_are_singular(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--videos", "1", "--frames", "3", "--size", "16",
                 "--quiet"]) == 0
    assert "wrote 1 video (3 frames" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "d")]) == 0
    assert "1 video, 3 frames" in capsys.readouterr().out
