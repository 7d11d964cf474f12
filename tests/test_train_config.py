"""Training config loading, deterministic batches, EMA and checkpoint bookkeeping (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vidm.train.batches import StepBatchSampler, mix_seed, step_generator
from vidm.train.checkpoint import check_same_model, list_checkpoints, resolve_resume
from vidm.train.config import (ContentTrainConfig, MotionTrainConfig, load_config, save_yaml, stage_configs,
                               to_dict)
from vidm.train.ema import EMA
from vidm.errors import CheckpointError, ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_and_overrides_fill_nested_dataclasses(tmp_path):
    path = write(tmp_path, "stage: motion\noptim: {lr: 5e-4, betas: [0.8, 0.99]}\ndata: {stride: [1, 3]}\n")
    cfg = load_config(MotionTrainConfig, path, ["optim.lr=1e-4", "run.steps=7", "data.latents=/x",
                                                 "model.model_channels=16", "mask.p_drop_known=0.25"])
    assert cfg.optim.lr == pytest.approx(1e-4)  # "1e-4" is a str to PyYAML; coerced to float
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.data.stride == (1, 3)
    assert cfg.run.steps == 7 and cfg.data.latents == "/x"
    assert cfg.model == {"preset": "tiny", "model_channels": 16}
    assert cfg.mask.p_drop_known == 0.25
    # Round trip through the saved YAML gives the same config.
    save_yaml(cfg, tmp_path / "out.yaml")
    assert to_dict(load_config(MotionTrainConfig, str(tmp_path / "out.yaml"))) == to_dict(cfg)


@pytest.mark.parametrize("text, overrides, needle", [
    ("optim: {lrr: 1}\n", [], "unknown config key 'optim.lrr'"),
    ("", ["data.bogus=1"], "unknown config key 'data.bogus'"),
    ("", ["run.steps=1.5"], "run.steps = 1.5 has the wrong type (expected int)"),
    ("", ["optim.lr=fast"], "optim.lr = 'fast' has the wrong type"),
    ("", ["run.progress=yes please"], "run.progress"),
    ("", ["run.mixed_precision=fp8"], "run.mixed_precision"),
    ("", ["optim.betas=[0.9]"], "optim.betas"),
    ("", ["lr"], "expected key=value"),
    ("run: 3\n", [], "run must be a mapping"),
    ("[1, 2]\n", [], "top level must be a mapping"),
])
def test_bad_config_is_one_line_error(tmp_path, text, overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(ContentTrainConfig, write(tmp_path, text), overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_presets_load():
    for stage, cls in stage_configs().items():
        for preset in ("tiny", "base"):
            cfg = load_config(cls, str(CONFIGS / stage / f"{preset}.yaml"))
            assert cfg.stage == stage and cfg.model["preset"] == preset
    base = load_config(MotionTrainConfig, str(CONFIGS / "motion" / "base.yaml"))  # the VIDIM recipe
    assert (base.optim.name, base.optim.lr, base.optim.warmup_steps, base.optim.betas, base.optim.grad_clip,
            base.ema.decay) == ("adam", 5e-4, 10000, (0.9, 0.999), 1.0, 0.9999)


def test_step_batches_are_a_function_of_seed_and_step():
    one = StepBatchSampler(10, 4, seed=3, rank=0, world=1)
    again = StepBatchSampler(10, 4, seed=3, start_step=5)
    assert one.batch(5, 0) == again.batch(5, 0) == next(iter(again))
    assert one.batch(5, 0) != StepBatchSampler(10, 4, seed=4).batch(5, 0)
    # Two ranks with batch 2 split exactly the examples one process with batch 4 draws.
    r0 = StepBatchSampler(10, 2, seed=3, rank=0, world=2).batch(5, 0)
    r1 = StepBatchSampler(10, 2, seed=3, rank=1, world=2).batch(5, 0)
    assert r0 + r1 == one.batch(5, 0)
    # An epoch visits every example once.
    s = StepBatchSampler(12, 4, seed=0)
    seen = [i for step in range(3) for i, _ in s.batch(step, 0)]
    assert sorted(seen) == list(range(12))
    # Grad accumulation: micro-batches of a step are consecutive positions.
    acc = StepBatchSampler(12, 2, seed=0, accum=2)
    assert acc.batch(0, 0) + acc.batch(0, 1) == StepBatchSampler(12, 4, seed=0).batch(0, 0)
    assert mix_seed(1, 2) != mix_seed(2, 1)
    a = torch.randn(3, generator=step_generator(0, 7, 0, 1))
    assert torch.equal(a, torch.randn(3, generator=step_generator(0, 7, 0, 1)))


def test_ema_decay_warmup_and_update():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.9, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.add_(1.0)
    expected = 0.1 * ema.model.weight + 0.9 * net.weight
    ema.update(net)
    assert torch.allclose(ema.model.weight, expected)
    ema.num_updates = 1000
    assert ema.current_decay() == 0.9
    state = ema.state_dict()
    other = EMA(nn.Linear(2, 2), decay=0.9)
    other.load_state_dict(state)
    assert other.num_updates == 1000 and torch.equal(other.model.weight, ema.model.weight)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_checkpoint_listing_and_model_check(tmp_path):
    run = tmp_path / "run"
    for step in (5, 10):
        d = run / "checkpoints" / f"step-{step:07d}"
        d.mkdir(parents=True)
        (d / "train_state.json").write_text(json.dumps({"step": step}))
    (run / "checkpoints" / ".tmp-step-0000015").mkdir()  # an interrupted write
    (run / "checkpoints" / "step-0000020").mkdir()  # no train_state.json: incomplete
    assert [p.name for p in list_checkpoints(run)] == ["step-0000005", "step-0000010"]
    assert resolve_resume("auto", run).name == "step-0000010"
    assert resolve_resume("auto", tmp_path / "fresh") is None
    assert resolve_resume(str(run / "checkpoints" / "step-0000005"), run).name == "step-0000005"
    with pytest.raises(CheckpointError):
        resolve_resume(str(tmp_path / "nothing"), run)
    state = {"stage": "motion", "model_config": {"model_channels": 32, "ch_mult": [1, 2]}}
    check_same_model("ck", state, "motion", {"model_channels": 32, "ch_mult": [1, 2]})
    with pytest.raises(CheckpointError, match="model.model_channels: 32 there, 16 now"):
        check_same_model("ck", state, "motion", {"model_channels": 16, "ch_mult": [1, 2]})
    with pytest.raises(CheckpointError, match="stage 'motion', not 'content'"):
        check_same_model("ck", state, "content", state["model_config"])
    # A checkpoint written before a config field existed resumes when the run keeps its default,
    # and only then.
    from vidm.models import MotionUNetConfig

    defaults = MotionUNetConfig.defaults()
    now = {"model_channels": 32, "ch_mult": [1, 2], "prior_mean": "none", "spacetime_levels": []}
    check_same_model("ck", state, "motion", now, defaults)
    with pytest.raises(CheckpointError, match="model.spacetime_levels: \\[\\] there, \\[1\\] now"):
        check_same_model("ck", state, "motion", {**now, "spacetime_levels": [1]}, defaults)
    with pytest.raises(CheckpointError, match="prior_mean: None there"):
        check_same_model("ck", state, "motion", now)  # without the defaults it cannot tell
