"""The training loop end to end on a toy motion model over a small latent cache made here:
exact resume after a SIGKILL during a checkpoint write, SIGTERM, bad input, NaN stop,
TensorBoard contents, and two CPU processes under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidm.data.latents import write_cache

# A motion UNet small enough that a step takes a few ms; fp32 so resume is bit-exact.
CONFIG = """
stage: motion
run: {name: run, steps: 20, mixed_precision: "no", log_every: 1, sample_every: 10, val_every: 10,
      checkpoint_every: 10, keep_checkpoints: 2, progress: false}
optim: {lr: 2.0e-3, warmup_steps: 5}
ema: {decay: 0.9}
model: {preset: null, model_channels: 16, ch_mult: [1, 2], num_res_blocks: 1, attn_levels: [1],
        temporal_levels: [1], head_dim: 16, norm_groups: 4}
data: {num_frames: 4, stride: [1, 2], batch_size: 2, val_clips: 2}
diffusion: {sample_steps: 2, num_samples: 2}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    g = torch.Generator().manual_seed(0)

    def entries():
        for i in range(8):  # a blob drifting across 8x8 latents, 10 frames per video
            base = torch.randn(1, 4, 8, 8, generator=g)
            drift = torch.randn(1, 4, 8, 8, generator=g)
            yield f"v{i}.mp4", base + 0.2 * torch.arange(10.0).view(10, 1, 1, 1) * drift, {"fps": 8.0}

    write_cache(root / "cache", entries(), {"autoencoder": None, "latent_scale": 1.0, "size": [32, 32]})
    (root / "motion.yaml").write_text(CONFIG)
    return root


def argv(setup, name, *extra):
    return ["--config", str(setup / "motion.yaml"), "--name", name, f"run.output_dir={setup / 'runs'}",
            f"data.latents={setup / 'cache'}", *extra]


# train.motion with a stage whose end-of-training hook writes each rank's final weights and
# first batch to RUN/rank-weights/rank{r}.safetensors|json, so a test can compare the ranks.
DUMPING_STAGE = """
import json, sys
from safetensors.torch import save_file
from vidm.train.loop import main
from vidm.train.motion import MotionStage

class DumpingStage(MotionStage):
    def on_train_end(self, run_dir, sampler):
        rank = self.accelerator.process_index
        out = run_dir / "rank-weights"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps({"first_batch": sampler.batch(sampler.start_step, 0)}))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(out / f"rank{rank}.safetensors"))

sys.exit(main(DumpingStage))
"""


def launch(setup, name, *extra, env=None, torchrun=False, script=None):
    """train.motion in a subprocess (or `script`, a file run in its place), under torchrun if asked."""
    entry = [str(script)] if script else ["-m", "vidm.train.motion"]
    cmd = [sys.executable, *entry, *argv(setup, name, *extra)]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29400 + os.getpid() % 500), *entry, *argv(setup, name, *extra)]
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, cwd=setup, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {path} appeared: {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


def in_process(setup, name, *extra) -> int:
    """Run train.motion in this process (accelerate's singleton state reset around it)."""
    from accelerate.state import AcceleratorState, GradientState

    from vidm.train.motion import main

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the subprocesses (OMP_NUM_THREADS=1): far faster on a busy CPU
    try:
        return main(argv(setup, name, *extra))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def test_resume_after_kill_during_checkpoint_write_is_exact(setup):
    runs = setup / "runs"
    # A: 20 steps straight. B: killed (SIGKILL) while writing its step-20 checkpoint, so its
    # latest complete checkpoint is step 10; resumed with --resume auto it redoes steps 11-20.
    a = launch(setup, "straight")
    b = launch(setup, "killed", env={"VIDM_TEST_CHECKPOINT_SLEEP": "20:60"})
    wait_for(runs / "killed" / "checkpoints" / ".tmp-step-0000020" / "train_state.json", b)
    b.send_signal(signal.SIGKILL)
    b.wait()
    rc, _, err = finish(a)
    assert rc == 0, err
    ckpts = runs / "killed" / "checkpoints"
    assert not (ckpts / "step-0000020").exists()
    assert (ckpts / "step-0000010" / "train_state.json").is_file()
    assert len(losses(runs / "killed")) == 20  # it had trained all 20 steps before dying

    rc, _, err = finish(launch(setup, "killed", "--resume", "auto"))
    assert rc == 0, err
    assert "resumed from" in err and "step-0000010" in err
    assert not list(ckpts.glob(".tmp-*"))  # the torn write was cleaned up
    for rel in ("checkpoints/step-0000020/model.safetensors", "model/model.safetensors"):
        assert max_diff(runs / "straight" / rel, runs / "killed" / rel) < 1e-6
    assert losses(runs / "killed") == losses(runs / "straight")
    assert [s for s, _ in losses(runs / "straight")] == list(range(1, 21))
    state = json.loads((ckpts / "step-0000020" / "train_state.json").read_text())
    assert state["step"] == 20 and state["global_batch"] == 2 and state["data_position"] == 40
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000010", "step-0000020"]

    from vidm.models import MotionUNet

    MotionUNet.from_pretrained(runs / "straight" / "model")  # the exported EMA model loads


def test_resume_at_the_last_step_from_another_run_exports_its_model(setup):
    """Was: 'done; EMA model in RUN/model' with no RUN/model (nothing left to train, so no save)."""
    runs = setup / "runs"
    if not (runs / "straight" / "checkpoints" / "step-0000020").is_dir():
        pytest.skip("needs the run of the resume test")
    ckpt = runs / "straight" / "checkpoints" / "step-0000020"
    assert in_process(setup, "export20", "--resume", str(ckpt), "run.steps=20") == 0
    assert max_diff(runs / "straight" / "model" / "model.safetensors",
                    runs / "export20" / "model" / "model.safetensors") == 0


def test_tensorboard_holds_scalars_and_images(setup):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = setup / "runs" / "straight" / "tb"
    if not tb.exists():
        pytest.skip("needs the run of the resume test")
    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_sec", "val/loss"} <= scalars
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 21))
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert lrs[0] == pytest.approx(2e-3 / 5) and lrs[-1] == pytest.approx(2e-3)  # linear warm-up
    images = acc.Tags()["images"]
    assert "samples/interpolation" in images
    img = acc.Images("samples/interpolation")[-1]
    assert img.step == 20 and img.width > 0 and len(img.encoded_image_string) > 100
    assert list((setup / "runs" / "straight" / "samples").glob("*.gif"))


def test_sigterm_saves_and_exits_zero(setup):
    run = setup / "runs" / "term"
    proc = launch(setup, "term", "run.steps=100000", "run.sample_every=0", "run.val_every=0")
    wait_for(run / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "signal received" in err
    last = losses(run)[-1][0]
    ckpts = sorted((run / "checkpoints").iterdir())
    assert ckpts[-1].name == f"step-{last:07d}"
    assert json.loads((ckpts[-1] / "train_state.json").read_text())["step"] == last
    assert (run / "model" / "model.safetensors").is_file()


def test_bad_input_fails_before_training(setup, tmp_path, capsys):
    def error_of(*extra) -> str:
        capsys.readouterr()
        assert in_process(setup, "bad", *extra) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("train.motion: error: "), err
        return err

    assert "unknown config key 'optim.lrr'" in error_of("optim.lrr=1")
    assert "has the wrong type" in error_of("data.batch_size=two")
    assert "model: MotionUNetConfig: unknown key" in error_of("model.chanels=8")
    assert "p_splat_start must be in [0, 1]" in error_of("diffusion.p_splat_start=1.5")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a latent cache" in error_of(f"data.latents={empty}")
    assert "missing config.json" in error_of("data.latents=null", f"data.root={empty}", f"data.autoencoder={empty}")
    assert "set data.latents" in error_of("data.latents=null", f"data.root={empty}")
    assert not (setup / "runs" / "bad" / "metrics.jsonl").exists()

    # A run with a checkpoint, then a resume with another model config: refused up front.
    assert in_process(setup, "small", "run.steps=1", "run.sample_every=0", "run.val_every=0") == 0
    before = (setup / "runs" / "small" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert in_process(setup, "small", "--resume", "auto", "model.model_channels=8", "run.steps=2") == 1
    err = capsys.readouterr().err.strip()
    assert "different model config" in err and "model.model_channels: 16 there, 8 now" in err
    assert (setup / "runs" / "small" / "metrics.jsonl").read_text() == before
    # Starting over an existing run without --resume is refused too (it would mix two runs).
    assert "pass --resume auto" in error_of("--name", "small")


@pytest.mark.filterwarnings("ignore:.*skipped 1 file")
def test_empty_video_folder_is_a_one_line_error(tmp_path, capsys):
    from accelerate.state import AcceleratorState

    from vidm.train.autoencoder import main

    empty = tmp_path / "videos"
    empty.mkdir()
    (empty / "broken.mp4").write_bytes(b"not a video")
    AcceleratorState._reset_state(True)
    config = Path(__file__).resolve().parents[1] / "configs" / "autoencoder" / "tiny.yaml"
    rc = main(["--config", str(config), f"data.root={empty}",
               f"run.output_dir={tmp_path / 'runs'}"])
    AcceleratorState._reset_state(True)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("train.autoencoder: error: ") and "no usable videos" in err[-1]
    assert not (tmp_path / "runs").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_checkpoint(setup, capsys):
    # An absurd learning rate blows the weights up after the first update.
    capsys.readouterr()
    rc = in_process(setup, "nan", "optim.lr=1e30", "optim.warmup_steps=0", "run.checkpoint_every=1",
                    "run.sample_every=0", "run.val_every=0", "run.steps=5")
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "non-finite" in err and "at step" in err and "last good checkpoint" in err, err
    ckpts = sorted((setup / "runs" / "nan" / "checkpoints").iterdir())
    assert ckpts, "the checkpoint before the blow-up is kept"
    weights = load_file(str(ckpts[0] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_two_cpu_processes_end_identical(setup):
    run = setup / "runs" / "ddp"
    script = setup / "dumping_motion.py"
    script.write_text(DUMPING_STAGE)
    proc = launch(setup, "ddp", "run.steps=3", "run.sample_every=3", "run.val_every=3", "run.checkpoint_every=0",
                  torchrun=True, script=script)
    rc, out, err = finish(proc)
    assert rc == 0, err[-3000:]
    dumps = run / "rank-weights"
    assert max_diff(dumps / "rank0.safetensors", dumps / "rank1.safetensors") == 0.0
    state = json.loads((run / "checkpoints" / "step-0000003" / "train_state.json").read_text())
    assert state["world_size"] == 2 and state["global_batch"] == 4
    # The ranks' step batches are disjoint halves of the global batch.
    b0 = [tuple(k) for k in json.loads((dumps / "rank0.json").read_text())["first_batch"]]
    b1 = [tuple(k) for k in json.loads((dumps / "rank1.json").read_text())["first_batch"]]
    assert len(b0) == len(b1) == 2 and not set(b0) & set(b1)
    assert sorted((run / "checkpoints" / "step-0000003").glob("random_states_*.pkl"))[-1].name == "random_states_1.pkl"
    assert len(losses(run)) == 3  # one log line per step: only the main process writes


def test_init_from_starts_a_new_run_from_a_model_folder(setup, capsys):
    from vidm.models import MotionUNet

    assert in_process(setup, "base-run", "run.steps=3", "run.sample_every=0", "run.val_every=0") == 0
    source = setup / "runs" / "base-run" / "model"
    # One step at a negligible lr: the export equals the source to ~1e-12 (a fresh init would not).
    assert in_process(setup, "tuned", f"run.init_from={source}", "run.steps=1", "optim.lr=1e-12",
                      "run.sample_every=0", "run.val_every=0") == 0
    assert max_diff(source / "model.safetensors", setup / "runs" / "tuned" / "model" / "model.safetensors") < 1e-9
    fresh = MotionUNet.from_pretrained(setup / "runs" / "base-run" / "model").state_dict()
    assert any(v.abs().sum() > 0 for k, v in fresh.items() if "to_out" in k)  # trained, not the zero init

    capsys.readouterr()
    assert in_process(setup, "mismatch", f"run.init_from={source}", "model.model_channels=8", "run.steps=1") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.init_from" in err and "another config" in err
    assert "model.model_channels: 16 there, 8 now" in err
    assert not (setup / "runs" / "mismatch").exists()

    # A grown model (space-time attention added): the old weights load, the new blocks keep
    # their init, and since their output layers start at zero the grown model computes what
    # the source did (a step at a negligible lr keeps it so).
    assert in_process(setup, "grown", f"run.init_from={source}", "model.spacetime_levels=[1]", "run.steps=1",
                      "optim.lr=1e-12", "run.sample_every=0", "run.val_every=0") == 0
    assert "tensors are new in this run's model (model.spacetime_levels: [] there, [1] now)" in capsys.readouterr().err
    grown = MotionUNet.from_pretrained(setup / "runs" / "grown" / "model")
    assert grown.config.spacetime_levels == (1,) and len(grown.body.spacetime) == 2
    x, c = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 3)
    known, times = torch.tensor([[True, False, True]]), torch.arange(3.0)[None]
    with torch.no_grad():
        expect = MotionUNet.from_pretrained(source).float()(x, c, known, times)
        torch.testing.assert_close(grown.float()(x, c, known, times), expect)

    # run.init_skip: those tensors keep their fresh init (the output layer starts at zero again).
    assert in_process(setup, "skip", f"run.init_from={source}", "run.init_skip=[body.conv_out]",
                      "model.prior_mean=known", "run.steps=1", "optim.lr=1e-12", "run.sample_every=0",
                      "run.val_every=0") == 0
    err = capsys.readouterr().err
    assert "config differs (model.prior_mean: 'none' there, 'known' now)" in err and "2 tensors skipped" in err
    restarted = load_file(str(setup / "runs" / "skip" / "model" / "model.safetensors"))
    assert restarted["body.conv_out.weight"].abs().max() < 1e-9
    src = load_file(str(source / "model.safetensors"))
    assert all((restarted[k].double() - v.double()).abs().max() < 1e-6 for k, v in src.items()
               if not k.startswith("body.conv_out"))
    assert in_process(setup, "skip-typo", f"run.init_from={source}", "run.init_skip=[body.conv_outt]",
                      "run.steps=1") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no weight of" in err and "body.conv_outt" in err


def test_splat_start_training_runs_and_logs_its_share(setup):
    assert in_process(setup, "splat", "run.steps=3", "run.log_every=1", "run.sample_every=0", "run.val_every=0",
                      "diffusion.p_splat_start=1.0", "mask.p_interpolation=1.0", "mask.p_prediction=0",
                      "mask.p_keyframes=0", "mask.p_random=0", "mask.p_unconditional=0", "mask.p_drop_known=0") == 0
    rows = [json.loads(line) for line in (setup / "runs" / "splat" / "metrics.jsonl").read_text().splitlines()]
    fracs = [r["splat_frac"] for r in rows if "splat_frac" in r]
    assert fracs and all(f == 1.0 for f in fracs)  # every window is an interpolation: all get the start
