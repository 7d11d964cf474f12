"""The GPU check (`python -m vidm.gpucheck`, scripts/gpu_check.sh): its dry run end to end on
this CPU (what CI proves before a GPU is lent), a part forced past its time limit, the GPU-only
parts skipped without a GPU, and its pieces (time limits, shapes, report) on their own."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidm.gpucheck import PARTS
from vidm.gpucheck.proc import run_part, run_tree
from vidm.gpucheck.report import render_markdown

ROOT = Path(__file__).resolve().parents[1]
NAMES = [p.name for p in PARTS]


def gpucheck(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, "-m", "vidm.gpucheck", "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert (out / "report.json").exists(), proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    return proc, report, (out / "report.md").read_text()


def test_dry_run_end_to_end(tmp_path):
    t0 = time.time()
    proc, rep, md = gpucheck(tmp_path / "out", "--dry-run", timeout=300)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rep["dry_run"] and rep["finished"] and list(rep["parts"]) == NAMES
    assert sorted(os.listdir(tmp_path / "out")) == ["log.txt", "report.json", "report.md"]
    for name, part in rep["parts"].items():
        assert part["status"] == "ok", (name, part.get("summary"), part.get("log_tail"))
        assert part["result"]["mode"] == "dry-run" and part["wall_s"] <= part["limit_s"], name
        assert f"| {name} | ok |" in md
    parts = {n: p["result"] for n, p in rep["parts"].items()}
    assert parts["env"]["cuda_available"] is False and parts["env"]["triton_interpreted"] is True
    assert parts["kernel_tests"]["counts"]["passed"] > 0 and parts["kernel_tests"]["gpu_only"]
    assert all(v == "skipped" for v in parts["kernel_tests"]["gpu_only"].values())  # GPU-only cases
    assert parts["sweep"]["records"] and all(x["ok"] for x in parts["sweep"]["records"])
    assert {x["op"] for x in parts["sweep"]["records"]} == {"attention", "group_norm"}
    assert parts["bench"]["results"] and not parts["bench"]["targets"]  # no Triton rows on a CPU
    assert [x["provider"] for x in parts["bench_compile"]["results"]].count("compiled") == 2
    runs = parts["train"]["runs"]
    assert set(runs) == {f"{s}-{p}" for s in ("autoencoder", "content", "motion") for p in ("triton", "torch")}
    assert all(r["rc"] == 0 and r["steps"] >= 1 and r["model_saved"] for r in runs.values())
    assert all(c["agree"] for c in parts["train"]["comparisons"].values())
    assert parts["sample"]["same_seed_same_bytes"] == {"mp4": True, "png": True}
    assert "same seed, same bytes" in md and "## Parts" in md
    print(f"dry run: {wall:.0f} s; " + ", ".join(f"{n} {p['wall_s']} s" for n, p in rep["parts"].items()))


def test_part_past_its_limit_is_recorded_and_the_next_runs(tmp_path):
    # env imports torch: 1 s is too little. data, after it, still runs.
    proc, rep, md = gpucheck(tmp_path / "out", "--dry-run", "--only", "env,data", "--limit", "env=1", timeout=120)
    env, data = rep["parts"]["env"], rep["parts"]["data"]
    assert env["status"] == "timed out" and env["wall_s"] < 10 and "limit" in env["reason"]
    assert env["result"].get("mode") == "dry-run"  # what it had written before the kill is kept
    assert data["status"] == "ok"
    assert rep["parts"]["sweep"]["status"] == "skipped" and "not selected" in rep["parts"]["sweep"]["reason"]
    assert proc.returncode == 1  # a part that is not ok
    assert "| env | timed out |" in md and "skipped: not selected" in md


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="on a GPU machine this would be the real check")
def test_without_gpu_the_gpu_parts_are_skipped(tmp_path):
    proc, rep, md = gpucheck(tmp_path / "out", "--install", "never", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rep["parts"]["install"]["status"] == "ok" and rep["parts"]["env"]["status"] == "ok"
    for p in PARTS:
        if p.gpu_only:
            assert rep["parts"][p.name]["status"] == "skipped" and rep["parts"][p.name]["reason"] == "no GPU"
            assert f"| {p.name} | skipped: no GPU |" in md


def test_gpu_limits_fit_the_window():
    assert sum(p.limit for p in PARTS) <= 8 * 60 - 10  # 8 minutes, with room for the orchestrator
    from vidm.gpucheck.runner import build_parser, parse_limits

    assert parse_limits(["sweep=1,bench=2.5"]) == {"sweep": 1.0, "bench": 2.5}
    for bad in (["nosuch=3"], ["sweep"], ["sweep=x"], ["sweep=0"]):
        with pytest.raises(SystemExit):
            parse_limits(bad)
    assert build_parser().parse_args([]).out is None  # -> $OUT, else gpu_check_report


def test_default_out_is_OUT_then_gpu_check_report(monkeypatch):
    from vidm.gpucheck.runner import default_out

    monkeypatch.setenv("OUT", "/some/where")
    assert default_out() == "/some/where"
    monkeypatch.delenv("OUT")
    assert default_out() == "gpu_check_report"


def test_run_part_kills_the_whole_group_at_its_limit(tmp_path):
    marker = tmp_path / "child-alive"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(60)\n"
    t0 = time.time()
    res = run_part([sys.executable, "-c", code], timeout=1.0, grace=0.5)
    assert res["timed_out"] and time.time() - t0 < 8
    time.sleep(3.5)
    assert not marker.exists()  # the grandchild went with it


def test_run_tree_stops_then_kills(tmp_path):
    # SIGTERM at stop_at lets a process finish; one that ignores it dies at the hard limit.
    graceful = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(60)\n"
    res = run_tree([sys.executable, "-c", graceful], timeout=20, stop_at=1.0)
    assert res["stopped"] and not res["killed"] and res["rc"] == 0 and res["wall_s"] < 10
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    res = run_tree([sys.executable, "-c", stubborn], timeout=2.0, stop_at=0.5)
    assert res["stopped"] and res["killed"] and res["wall_s"] < 10


def test_preset_shapes_and_bench_file(tmp_path):
    from vidm.kernels.bench import load_shapes
    from vidm.gpucheck import shapes
    from vidm.gpucheck.parts import write_json

    cases = shapes.unique_cases(shapes.capture("tiny"), "tiny")
    att = cases["attention"]
    assert {c["kind"] for c in att} == {"spatial", "temporal"}
    assert len({c["label"] for c in att}) == len(att)
    temporal = [c for c in att if c["kind"] == "temporal"]
    assert all(c["shape"][2] == shapes.PRESET_DATA["tiny"]["num_frames"] for c in temporal)
    gn = cases["group_norm"]
    assert any(c["modulated"] for c in gn) and any(not c["modulated"] for c in gn)
    bench = shapes.bench_shapes(cases, max_attention=3, max_group_norm=2)
    assert len(bench["attention"]) == 3 and len(bench["group_norm"]) == 2
    write_json(tmp_path / "s.json", bench)
    assert load_shapes(str(tmp_path / "s.json")) == bench


def test_bench_shapes_file_is_checked(tmp_path):
    from vidm.kernels.bench import load_shapes
    from vidm.errors import ConfigError

    for bad in ({"conv": []}, {"attention": [["x", 1, 2, 3]]}, {"group_norm": [["x", 1, 32, 4, 4, 0]]}, [1]):
        (tmp_path / "s.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="--shapes"):
            load_shapes(str(tmp_path / "s.json"))


def test_pytest_output_parsing():
    from vidm.gpucheck.parts import parse_pytest

    text = ("tests/test_kernels_attention.py::test_a[1] PASSED [ 10%]\n"
            "tests/test_kernels_attention.py::test_gpu_b[2] SKIPPED (GPU only) [ 20%]\n"
            "[gw1] [ 30%] FAILED tests/test_kernels_group_norm.py::test_gpu_c[x]\n"
            "===== 1 failed, 1 passed, 1 skipped in 3.21s =====\n")
    p = parse_pytest(text)
    assert p["counts"] == {"passed": 1, "skipped": 1, "failed": 1}
    assert p["failed"] == ["tests/test_kernels_group_norm.py::test_gpu_c[x]"]
    assert len(p["gpu_only"]) == 2 and p["final_line"] == "1 failed, 1 passed, 1 skipped"


def test_loss_comparison_at_equal_steps():
    from vidm.gpucheck.parts import compare_losses

    a = [{"step": s, "loss": 1.0 / s} for s in range(1, 31)]
    b = [{"step": s, "loss": 1.001 / s} for s in range(1, 21)]
    c = compare_losses(a, b)
    assert c["common_steps"] == 20 and c["last_common_step"] == 20 and c["agree"]
    assert abs(c["step1_rel_diff"] - 0.001 / 1.001) < 1e-9
    assert not compare_losses([{"step": 1, "loss": 2.0}], [{"step": 1, "loss": 1.0}])["agree"]
    assert compare_losses(a, [])["common_steps"] == 0


def test_report_of_a_cut_off_run_renders():
    rep = {"started": "t", "finished": None, "budget_s": 475, "elapsed_s": 12,
           "parts": {"env": {"title": "1. Environment", "status": "ok", "wall_s": 3, "limit_s": 15,
                             "result": {"torch": "x", "cuda_available": True}},
                     "sweep": {"title": "2. Sweep", "status": "running", "limit_s": 35,
                               "result": {"records": [{"op": "attention", "label": "l", "dtype": "bf16",
                                                       "layout": "bhnd", "ok": False, "error": "boom", "tol": 0.02}]}},
                     "train": {"title": "4. Training", "status": "timed out", "limit_s": 165, "wall_s": 168,
                               "result": {"runs": {"content-triton": {"rc": -9, "steps": 12}}}, "log_tail": "last"},
                     "sample": {"title": "4. Sampling", "status": "pending", "limit_s": 45}}}
    md = render_markdown(rep)
    assert "still running or cut off" in md and "| sweep | running |" in md and "| sample | pending |" in md
    assert "boom" in md and "timed out" in md and "last" in md


@pytest.mark.parametrize("dry_run", [False, True])
def test_training_overrides_are_valid_configs(tmp_path, dry_run):
    # A typo in the GPU run's overrides would cost the GPU window: check them here (no training).
    from vidm.train.common import build_model_config
    from vidm.train.config import AutoencoderTrainConfig, ContentTrainConfig, MotionTrainConfig, load_config
    from vidm.train.loop import _check_run_config
    from vidm.gpucheck import parts

    class Ctx:
        work = tmp_path

    Ctx.dry_run = dry_run
    for stage, cls in (("autoencoder", AutoencoderTrainConfig), ("content", ContentTrainConfig),
                       ("motion", MotionTrainConfig)):
        config, overrides = parts.train_overrides(stage, Ctx)
        assert config == f"configs/{stage}/{'tiny' if dry_run else 'base'}.yaml"
        cfg = load_config(cls, str(ROOT / config), overrides)
        _check_run_config(cfg, config)
        net = build_model_config(stage, cfg.model, config)
        assert cfg.run.mixed_precision == ("no" if dry_run else "bf16") and cfg.run.log_every == 1
        if not dry_run:
            assert cfg.model == {"preset": "base"} and cfg.run.steps >= 200  # the base width
            assert net.to_dict() == build_model_config(stage, {"preset": "base"}, config).to_dict()


def test_targets_against_flash_and_ratios():
    from vidm.gpucheck.parts import issue_targets, ratio_table

    def row(op, case, shape, prov, ms, frac=None):
        return {"op": op, "case": case, "shape": shape, "provider": prov,
                "fwd": {"ms": ms, "peak_fraction": frac}, "fwd+bwd": {"ms": 3 * ms, "peak_fraction": frac}}

    rows = [row("attention", "spatial 32x32 h4", [32, 4, 1024, 64], "triton", 1.0),
            row("attention", "spatial 32x32 h4", [32, 4, 1024, 64], "sdpa", 1.2),
            row("attention", "spatial 32x32 h4", [32, 4, 1024, 64], "sdpa_flash", 0.8),
            row("attention", "temporal T=16 32x32 h2", [8192, 2, 16, 64], "triton", 1.0),
            row("attention", "temporal T=16 32x32 h2", [8192, 2, 16, 64], "sdpa", 2.0),
            row("group_norm", "C=256 32x32", [128, 256, 32, 32], "triton", 1.0, 0.75),
            row("group_norm", "C=256 32x32", [128, 256, 32, 32], "eager", 3.0, 0.25)]
    for r in rows:  # as kernels.bench._speedups does
        base = next(b for b in rows if b["case"] == r["case"] and b["provider"] in ("sdpa", "eager"))
        r["fwd"]["speedup"] = base["fwd"]["ms"] / r["fwd"]["ms"]
    t = {x["target"]: (x["value"], x["ok"]) for x in issue_targets(rows)}
    assert t["attention fwd spatial 32x32 h4 >= 0.9x SDPA flash"] == (0.8, False)  # flash, not SDPA's 1.2
    assert t["temporal attention fwd temporal T=16 32x32 h2 >= 1.5x SDPA"] == (2.0, True)
    assert t["GroupNorm+scale/shift+SiLU fwd C=256 32x32 >= 70% copy bandwidth"] == (0.75, True)
    ratios = {(x["case"], x["pass"]): x for x in ratio_table(rows)}
    assert ratios[("spatial 32x32 h4", "fwd")]["sdpa_flash/triton"] == 0.8
