"""A miniature of the whole training pipeline, in process, with toy-sized models:
synthetic videos -> autoencoder -> `cache-latents` -> content (cache) + motion (videos encoded
on the fly) -> model folders that load. Also the `vidm train` alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidm.data.synth import generate_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

AE = ["model.preset=null", "model.base_channels=8", "model.ch_mult=[1,2,2]", "model.norm_groups=4",
      "model.mid_attention=false"]
UNET = ["model.preset=null", "model.model_channels=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
        "model.attn_levels=[1]", "model.head_dim=16", "model.norm_groups=4"]
RUN = ["run.steps=2", "run.mixed_precision=no", "run.log_every=1", "run.sample_every=2", "run.val_every=2",
       "run.checkpoint_every=0", "run.progress=false", "data.size=32", "data.batch_size=2", "data.val_clips=1",
       "diffusion.sample_steps=2", "diffusion.num_samples=2"]


def run_stage(module, *argv) -> int:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the subprocesses (OMP_NUM_THREADS=1): far faster on a busy CPU
    try:
        return module.main(list(argv))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def test_mini_pipeline(tmp_path):
    import vidm.train.autoencoder
    import vidm.train.content
    import vidm.train.motion
    from vidm.commands.cache import main as cache_main
    from vidm.data.latents import LatentCache
    from vidm.models import load_pretrained

    data, runs = tmp_path / "videos", tmp_path / "runs"
    generate_dataset(data, videos=4, frames=10, size=32, progress=False)
    out = [f"run.output_dir={runs}"]

    ae_run = RUN[:-2]  # the autoencoder config has no diffusion section
    assert run_stage(vidm.train.autoencoder, "--config", str(CONFIGS / "autoencoder" / "tiny.yaml"), *out, *AE, *ae_run,
                     f"data.root={data}", "--name", "ae") == 0
    ae_dir = runs / "ae" / "model"
    ae = load_pretrained(ae_dir)
    assert ae.config.latent_scale != 1.0  # measured on held-out frames at export
    assert (runs / "ae" / "config.yaml").is_file() and list((runs / "ae" / "samples").glob("*.png"))

    assert cache_main(["--autoencoder", str(ae_dir), "--data", str(data), "--out", str(tmp_path / "cache"),
                       "--size", "32"]) == 0
    cache = LatentCache(tmp_path / "cache")
    assert len(cache) == 4 and cache.latent_shape == (4, 8, 8) and cache.frames(0).shape == (10, 4, 8, 8)

    assert run_stage(vidm.train.content, "--config", str(CONFIGS / "content" / "tiny.yaml"), *out, *UNET, *RUN,
                     f"data.latents={tmp_path / 'cache'}", "run.grad_accum=2", "--name", "content") == 0
    assert type(load_pretrained(runs / "content" / "model")).__name__ == "ContentUNet"

    assert run_stage(vidm.train.motion, "--config", str(CONFIGS / "motion" / "tiny.yaml"), *out, *UNET, *RUN,
                     "model.temporal_levels=[1]", "data.latents=null", f"data.root={data}",
                     f"data.autoencoder={ae_dir}", "data.num_frames=4", "--name", "motion") == 0
    assert type(load_pretrained(runs / "motion" / "model")).__name__ == "MotionUNet"
    rows = [json.loads(x) for x in (runs / "motion" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and any("val_loss" in r for r in rows)


def test_vidm_train_alias(capsys):
    from vidm.cli import main

    assert main(["train", "motion", "--config", "no/such.yaml"]) == 1
    assert "train.motion: error: no/such.yaml: config file not found" in capsys.readouterr().err
    assert main(["train", "nope"]) == 1  # a usage error: one line, exit status 1 (README)
    assert capsys.readouterr().err.startswith("vidm: error: argument stage: invalid choice")
