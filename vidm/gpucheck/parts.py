"""The parts of the GPU check. Each runs in its own process, started by the orchestrator
(vidm/gpucheck/runner.py) as

    python -m vidm.gpucheck.parts NAME CONTEXT.json

CONTEXT.json holds the run's settings (dry_run, gpu, repo, work, seed, deadline, result path).
A part writes its result (a JSON object with "status", "summary" and its numbers) to the result
path after every step, atomically, so a part killed at its time limit still leaves what it had
measured. Everything a part starts is bounded by the part's deadline.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from vidm import stages
from vidm.bundled import PRETRAINED_ROOT
from vidm.gpucheck.proc import run_tree
from vidm.gpucheck.report import clean_json

BUNDLED = PRETRAINED_ROOT / "synth-tiny"  # its GPU checks compare against this plain-decoder model
STAGES = stages.names(required=True)  # the stages each provider trains and packs
PROVIDERS = ("triton", "torch")


# ---------------------------------------------------------------------------------------------
# Context and results

def write_json(path, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(clean_json(data), f, indent=2)
    os.replace(tmp, path)


class Ctx:
    def __init__(self, path: str):
        with open(path) as f:
            c = json.load(f)
        self.name = c["part"]
        self.dry_run = bool(c["dry_run"])
        self.gpu = bool(c["gpu"]) and not self.dry_run
        self.repo = Path(c["repo"])
        self.work = Path(c["work"])
        self.seed = int(c["seed"])
        self.deadline = float(c["deadline"])  # time.time() by which this part must have ended
        self.install_mode = c.get("install", "auto")
        self.result_path = c["result"]
        self.env = c.get("env", {})
        self.result: dict = {"status": "running", "mode": "dry-run" if self.dry_run else ("gpu" if self.gpu else "cpu")}
        self.save()

    def remaining(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        write_json(self.result_path, self.result)

    def child_env(self, **extra) -> dict:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update({k: str(v) for k, v in extra.items()})
        return env


def log(msg: str) -> None:
    print(f"[gpucheck] {msg}", flush=True)


def run_logged(ctx: Ctx, cmd: list[str], *, timeout: float, stop_at: float | None = None, env=None,
               logfile: Path | None = None, cwd=None) -> dict:
    """run_tree with its output in `logfile` (then copied to this part's log); the result also
    holds the output's last lines ("tail")."""
    logfile = logfile or ctx.work / f"{ctx.name}-{int(time.time() * 1000)}.log"
    log("$ " + shlex.join(cmd))
    with open(logfile, "w") as f:
        res = run_tree(cmd, timeout=max(1.0, timeout), stop_at=stop_at, env=env or ctx.child_env(),
                       cwd=str(cwd or ctx.repo), stdout=f)
    text = logfile.read_text(errors="replace")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    sys.stdout.flush()
    res["tail"] = "\n".join(text.strip().splitlines()[-15:])
    res["output"] = text
    return res


def _short(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "output"}


def vidm_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "vidm", *map(str, args)]


def vidm_inprocess(argv) -> tuple[int, float]:
    """`vidm ARGV` in this process: (exit code, seconds)."""
    from vidm.cli import main as vidm_main

    argv = [str(a) for a in argv]
    log("$ vidm " + " ".join(argv))
    t0 = time.time()
    try:
        rc = vidm_main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code if isinstance(e.code, int) else 2
    return rc, round(time.time() - t0, 2)


# ---------------------------------------------------------------------------------------------
# 1a. install

# import name -> distribution (what pip installs); the project's dependencies, plus pytest for
# the kernel tests.
REQUIRED = {"torch": "torch", "numpy": "numpy", "av": "av", "PIL": "pillow", "yaml": "pyyaml",
            "safetensors": "safetensors", "accelerate": "accelerate", "tensorboard": "tensorboard",
            "tqdm": "tqdm", "einops": "einops", "pytest": "pytest"}
if sys.platform.startswith("linux"):
    REQUIRED["triton"] = "triton"
GPU_EXTRA = {"xformers": "xformers"}


def _missing(mods: dict) -> list[str]:
    return [dist for mod, dist in mods.items() if importlib.util.find_spec(mod) is None]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_nvidia() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def part_install(ctx: Ctx) -> dict:
    r = ctx.result
    gpu_machine = _has_nvidia() and not ctx.dry_run
    missing = _missing(REQUIRED)
    missing_gpu = _missing(GPU_EXTRA) if gpu_machine else []
    project = _dist_version("vidm")
    r.update(project_installed=project, missing=missing, missing_gpu_extra=missing_gpu,
             versions_before={d: _dist_version(d) for d in [*REQUIRED.values(), *GPU_EXTRA.values()]})
    target = f"{ctx.repo}[gpu]" if gpu_machine else str(ctx.repo)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
           "--timeout", "10", "--retries", "0", "-e", target, "pytest"]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.append("--no-build-isolation")  # no download of a build backend (offline machines)
    torch_version = _dist_version("torch")
    if torch_version:  # never let pip swap the machine's (CUDA) torch for another build
        constraints = ctx.work / "constraints.txt"
        constraints.write_text(f"torch=={torch_version}\n")
        cmd += ["-c", str(constraints)]
    needed = bool(missing or missing_gpu or project is None)
    r["command"] = shlex.join(cmd)
    if ctx.install_mode == "never" or ctx.dry_run or (ctx.install_mode == "auto" and not needed):
        why = ("dry run: nothing is installed" if ctx.dry_run else "--install never" if ctx.install_mode == "never"
               else "everything needed is installed")
        r["installed"] = False
        r["note"] = why
        ok = not missing
        r["status"] = "ok" if ok else "failed"
        r["summary"] = (f"{why}; " if why else "") + (f"missing: {', '.join(missing)}" if missing else
                                                      "all required modules importable") + \
            (f"; not installed: {', '.join(missing_gpu)}" if missing_gpu else "")
        return r
    attempts = []
    t0 = time.time()
    res = run_logged(ctx, cmd, timeout=ctx.remaining() - 3)
    attempts.append({"command": shlex.join(cmd), **_short(res)})
    if res["rc"] != 0 and _dist_version("vidm") is None and ctx.remaining() > 10:
        # Offline, or the gpu extra has no wheel for this torch: at least the project itself.
        cmd2 = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
                "--no-build-isolation", "-e", str(ctx.repo)]
        res2 = run_logged(ctx, cmd2, timeout=ctx.remaining() - 3)
        attempts.append({"command": shlex.join(cmd2), **_short(res2)})
    r["install_s"] = round(time.time() - t0, 1)
    r["attempts"] = attempts
    r["installed"] = any(a["rc"] == 0 for a in attempts)
    importlib.invalidate_caches()
    still = _missing(REQUIRED)
    still_gpu = _missing(GPU_EXTRA) if gpu_machine else []
    r.update(missing_after=still, missing_gpu_extra_after=still_gpu, project_after=_dist_version("vidm"),
             versions_after={d: _dist_version(d) for d in [*REQUIRED.values(), *GPU_EXTRA.values()]})
    r["status"] = "ok" if not still else "failed"
    r["summary"] = (f"pip {'succeeded' if attempts[0]['rc'] == 0 else 'failed'} in {r['install_s']} s"
                    + (f" (fallback --no-deps: rc {attempts[-1]['rc']})" if len(attempts) > 1 else "")
                    + (f"; still missing: {', '.join(still)}" if still else "")
                    + (f"; not installed: {', '.join(still_gpu)}" if still_gpu else ""))
    return r


# ---------------------------------------------------------------------------------------------
# 1b. env

def _nvidia_smi() -> dict:
    out: dict = {}
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"nvidia_smi": None}
    try:
        q = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version,pci.bus_id,power.limit,"
                                 "clocks.max.sm", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=5)
        out["nvidia_smi_gpus"] = [line.strip() for line in q.stdout.strip().splitlines() if line.strip()]
        full = subprocess.run([exe], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", full)
        out["driver_cuda"] = m.group(1) if m else None
        m = re.search(r"Driver Version:\s*([\d.]+)", full)
        out["driver"] = m.group(1) if m else None
    except (OSError, subprocess.TimeoutExpired) as e:
        out["nvidia_smi_error"] = str(e)
    return out


def part_env(ctx: Ctx) -> dict:
    r = ctx.result
    r.update(python=sys.version.split()[0], platform=platform.platform(), host=socket.gethostname(),
             cpus=os.cpu_count(), executable=sys.executable)
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        r["ram_gib"] = round(kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    r["disk_free_gib"] = round(shutil.disk_usage(ctx.work).free / 2**30, 1)
    try:
        r["git_commit"] = subprocess.run(["git", "-C", str(ctx.repo), "rev-parse", "HEAD"], capture_output=True,
                                         text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        r["git_commit"] = None
    r.update(_nvidia_smi())
    ctx.save()
    t0 = time.time()
    import torch

    r["torch_import_s"] = round(time.time() - t0, 2)
    r["torch"] = torch.__version__
    r["torch_cuda"] = torch.version.cuda
    r["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    r["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        t0 = time.time()
        props = torch.cuda.get_device_properties(0)
        torch.zeros(1, device="cuda")
        r["cuda_init_s"] = round(time.time() - t0, 2)
        r.update(gpu_count=torch.cuda.device_count(), gpu_name=props.name,
                 gpu_memory_gib=round(props.total_memory / 2**30, 1),
                 capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                 bf16_supported=torch.cuda.is_bf16_supported())
    for dist in ("triton", "xformers", "accelerate", "numpy", "av", "safetensors", "pytest", "pytest-xdist"):
        r[dist.replace("-", "_")] = _dist_version(dist)
    r["vidm"] = _dist_version("vidm")
    try:
        from vidm import kernels

        r["kernels_from"] = os.path.dirname(kernels.__file__)
        r["triton_importable"] = kernels.HAS_TRITON
        r["triton_interpreted"] = kernels.INTERPRET
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        r["kernels_error"] = f"{type(e).__name__}: {e}"
    if r.get("xformers"):
        try:
            import xformers.ops  # noqa: F401

            r["xformers_importable"] = True
        except Exception as e:  # noqa: BLE001
            r["xformers_importable"] = False
            r["xformers_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    r["VIDM_KERNELS"] = os.environ.get("VIDM_KERNELS")
    r["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET")
    r["status"] = "ok"
    if r["cuda_available"]:
        r["summary"] = (f"{r['gpu_name']} ({r['gpu_memory_gib']} GiB, sm {r['capability']}), driver "
                        f"{r.get('driver')} (CUDA {r.get('driver_cuda')}), torch {r['torch']} (CUDA {r['torch_cuda']}), "
                        f"triton {r['triton']}, xformers {r['xformers'] or 'not installed'}")
    else:
        r["summary"] = (f"no CUDA device; torch {r['torch']}, triton {r['triton']} "
                        f"({'interpreter' if r.get('triton_interpreted') else 'compiler'}), "
                        f"xformers {r['xformers'] or 'not installed'}, {r['cpus']} CPUs")
    return r


# ---------------------------------------------------------------------------------------------
# 2a. kernel tests

KERNEL_TEST_FILES = ["tests/test_kernels_attention.py", "tests/test_kernels_group_norm.py"]
# The dry run's selection (the interpreter runs every Triton program in Python): the GPU-only
# cases (they report as skipped there), guards and a few small interpreter cases.
DRY_RUN_TESTS = "gpu or raise or large_mean or strided"

_PYTEST_LINE = [re.compile(r"^(?P<id>\S+::\S+)\s+(?P<res>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)"),
                re.compile(r"^\[gw\d+\]\s+\[\s*\d+%\]\s+(?P<res>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\s+(?P<id>\S+::\S+)")]


def parse_pytest(text: str) -> dict:
    results: dict[str, str] = {}
    for line in text.splitlines():
        for pat in _PYTEST_LINE:
            m = pat.match(line.strip())
            if m:
                results[m.group("id")] = m.group("res").lower()
    counts: dict[str, int] = {}
    for v in results.values():
        counts[v] = counts.get(v, 0) + 1
    m = re.findall(r"^=+ (.*(?:passed|failed|error|skipped).*) in [\d.]+s", text, re.M)
    gpu_only = {k: v for k, v in results.items() if "gpu" in k.split("::")[-1]}
    return {"counts": counts, "final_line": m[-1] if m else None,
            "failed": [k for k, v in results.items() if v in ("failed", "error")],
            "gpu_only": gpu_only, "tests": len(results)}


def part_kernel_tests(ctx: Ctx) -> dict:
    r = ctx.result
    cmd = [sys.executable, "-m", "pytest", "-v", "-rfEs", "-p", "no:cacheprovider", *KERNEL_TEST_FILES]
    if ctx.dry_run:
        cmd += ["-k", DRY_RUN_TESTS]
    elif importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "4"]  # Triton compiles in 4 processes at once
    r["command"] = shlex.join(cmd)
    env = ctx.child_env()
    res = run_logged(ctx, cmd, timeout=ctx.remaining() - 2, env=env)
    parsed = parse_pytest(res["output"])
    r.update(parsed, rc=res["rc"], wall_s=res["wall_s"], killed=res["killed"])
    c = parsed["counts"]
    gpu_ran = sum(v != "skipped" for v in parsed["gpu_only"].values())
    r["summary"] = (f"{c.get('passed', 0)} passed, {c.get('failed', 0) + c.get('error', 0)} failed, "
                    f"{c.get('skipped', 0)} skipped; GPU-only cases run: {gpu_ran} of {len(parsed['gpu_only'])}"
                    + (" (dry run: selection -k '" + DRY_RUN_TESTS + "', interpreter)" if ctx.dry_run else ""))
    if res["killed"]:
        r["status"] = "timed out"
        r["summary"] += "; pytest killed at the time limit"
    else:
        r["status"] = "ok" if res["rc"] == 0 else "failed"
    if res["rc"] not in (0, None) and not parsed["tests"]:
        r["error_tail"] = res["tail"]
    return r


# ---------------------------------------------------------------------------------------------
# 2b. sweep

def _cases(preset: str) -> dict:
    from vidm.gpucheck import shapes

    return shapes.unique_cases(shapes.capture(preset), preset)


def part_sweep(ctx: Ctx) -> dict:
    import torch

    from vidm.gpucheck import sweep

    r = ctx.result
    preset = "tiny" if ctx.dry_run else "base"
    device = torch.device("cuda" if ctx.gpu else "cpu")
    t0 = time.time()
    cases = _cases(preset)
    r["capture_s"] = round(time.time() - t0, 1)
    pp = sweep.per_position_supported()
    r["per_position_modulation"] = "swept" if pp else "not supported by kernels.group_norm yet (skipped)"
    if ctx.dry_run:  # the interpreter: no bf16 attention (its dots come out wrong), small batches
        items = sweep.plan(cases, ctx.seed, ["fp32", "fp16", "bf16"], [1], pp, attention_dtypes=["fp32", "fp16"])
        items = items[:6]  # one case of each (op, dtype) group: the interpreter is slow
    else:
        items = sweep.plan(cases, ctx.seed, ["bf16", "fp16", "fp32"], [1, 2, 3], pp)
    r.update(preset=preset, seed=ctx.seed, planned=len(items), records=[])
    ctx.save()
    slowest = 2.0
    for n, item in enumerate(items):
        if ctx.remaining() < 2 + 1.5 * slowest:
            break
        rec = sweep.run_item(item, device, ctx.seed * 1000 + n)
        slowest = max(slowest, rec["s"])
        r["records"].append(rec)
        r["by_dtype"] = sweep.summarize(r["records"])
        log(f"sweep {rec['op']} {rec['label']} {rec['dtype']} x{rec['batch_mult']} {rec['layout']}: "
            + (f"max err {rec['max_err']:.2e} (tol {rec['tol']:.0e}) {'ok' if rec['ok'] else 'FAILED'}"
               if "max_err" in rec else rec.get("error", "")) + f" [{rec['s']} s]")
        ctx.save()
    ran = len(r["records"])
    bad = [x for x in r["records"] if not x["ok"]]
    groups = {(i["op"], i["dtype"]) for i in items}
    seen = {(x["op"], x["dtype"]) for x in r["records"]}
    r["groups_covered"] = f"{len(seen)} of {len(groups)}"
    # The sweep is time-boxed: it is complete enough when every (op, dtype) group got a case.
    r["status"] = "failed" if bad else ("ok" if seen == groups else "timed out")
    r["summary"] = (f"{ran - len(bad)} of {ran} cases within tolerance ({len(items)} planned in the time box, "
                    f"preset {preset}; op x dtype groups covered: {len(seen)} of {len(groups)}); "
                    f"per-position modulation: {'swept' if pp else 'not implemented yet'}")
    return r


# ---------------------------------------------------------------------------------------------
# 3. bench

def _bench_chunks(ctx: Ctx, shapes: dict, compile_backend: str | None, tag: str) -> tuple[list[dict], list[dict]]:
    """`vidm bench kernels --shapes` one op at a time (each chunk's rows are kept even if a
    later one is cut off). Returns (results rows, per-chunk run info)."""
    from vidm.cli import main as vidm_main

    rows, runs = [], []
    for op in ("attention", "group_norm"):
        if not shapes.get(op):
            continue
        if ctx.remaining() < 5:
            runs.append({"op": op, "skipped": "no time left"})
            continue
        shp = ctx.work / f"{tag}-{op}-shapes.json"
        out = ctx.work / f"{tag}-{op}.json"
        write_json(shp, {op: shapes[op]})
        argv = ["bench", "kernels", "--ops", op, "--shapes", str(shp), "--out", str(out)]
        argv += (["--device", "cpu", "--dtype", "fp32", "--quick", "--reps", "1"] if ctx.dry_run
                 else ["--dtype", "bf16", "--reps", "10"])
        if compile_backend:
            argv += ["--compile", compile_backend]
        log("$ vidm " + " ".join(argv))
        t0 = time.time()
        rc = vidm_main(argv)
        info = {"op": op, "rc": rc, "wall_s": round(time.time() - t0, 1), "argv": argv}
        if rc == 0 and out.exists():
            rep = json.loads(out.read_text())
            rows += rep["results"]
            info.update(device=rep["device"], peaks=rep["peaks"], notes=rep["notes"])
        runs.append(info)
        ctx.result.setdefault("runs", []).append(info)
        ctx.result["results"] = rows
        ctx.save()
    return rows, runs


def issue_targets(rows: list[dict]) -> list[dict]:
    """The issue's kernel targets from benchmark rows: spatial attention (N >= 1024) >= 0.9x SDPA
    flash, temporal T=16 >= 1.5x SDPA, fused GroupNorm >= 70% of copy bandwidth (forward)."""
    from vidm.kernels.bench import check_targets

    targets = check_targets(rows)
    return [t for t in targets if "2x eager" not in t["target"]] + \
        [t for t in targets if "2x eager" in t["target"]]


def ratio_table(rows: list[dict]) -> list[dict]:
    """Per case and pass: each provider's time over Triton's (> 1: Triton is faster)."""
    table = []
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["op"], r["case"]), {})[r["provider"]] = r
    for (op, case), provs in by_case.items():
        for p in ("fwd", "fwd+bwd"):
            tri = provs.get("triton", {}).get(p)
            row = {"op": op, "case": case, "pass": p, "triton_ms": tri["ms"] if tri else None}
            for name, rec in provs.items():
                if name == "triton" or p not in rec:
                    continue
                row[f"{name}_ms"] = rec[p]["ms"]
                if tri:
                    row[f"{name}/triton"] = rec[p]["ms"] / tri["ms"]
            if op == "group_norm" and tri:
                row["triton_peak_fraction"] = tri["peak_fraction"]
            table.append(row)
    return table


def part_bench(ctx: Ctx) -> dict:
    from vidm.gpucheck import shapes as shp

    r = ctx.result
    preset = "tiny" if ctx.dry_run else "base"
    cases = _cases(preset)
    if ctx.dry_run:
        shapes = shp.bench_shapes(cases, max_attention=2, max_group_norm=2, batch_scale=0.25)
    else:
        shapes = shp.bench_shapes(cases, max_attention=8, max_group_norm=8)
    r.update(preset=preset, shapes=shapes)
    rows, runs = _bench_chunks(ctx, shapes, None, "bench")
    r["targets"] = issue_targets(rows)
    r["ratios"] = ratio_table(rows)
    for t in r["targets"]:
        v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        log(f"target {'met   ' if t['ok'] else 'MISSED'} {t['target']}: {v}")
    met = sum(t["ok"] for t in r["targets"])
    errors = [f"{x['op']} {x['case']} {x['provider']}: {x['error']}" for x in rows if "error" in x]
    r["errors"] = errors
    done = all(i.get("rc") == 0 for i in runs) and len(runs) == 2
    r["status"] = "ok" if done and not any(e.split(":")[0].endswith("triton") for e in errors) else \
        ("timed out" if any("skipped" in i for i in runs) else "failed")
    r["summary"] = (f"{len(rows)} rows over {len(shapes['attention'])} attention + {len(shapes['group_norm'])} "
                    f"GroupNorm shapes of the {preset} presets; targets: {met} met, {len(r['targets']) - met} MISSED"
                    + ("" if r["targets"] else " (no Triton rows: no GPU)")
                    + (f"; {len(errors)} provider errors" if errors else ""))
    return r


def part_bench_compile(ctx: Ctx) -> dict:
    from vidm.gpucheck import shapes as shp

    r = ctx.result
    preset = "tiny" if ctx.dry_run else "base"
    cases = _cases(preset)
    full = shp.bench_shapes(cases, max_attention=1, max_group_norm=1, batch_scale=0.25 if ctx.dry_run else 1.0)
    backend = "eager" if ctx.dry_run else "inductor"
    r.update(preset=preset, shapes=full, backend=backend)
    rows, runs = _bench_chunks(ctx, full, backend, "compile")
    comp = [x for x in rows if x["provider"] == "compiled"]
    r["ratios"] = ratio_table(rows)
    r["compiled"] = [{"op": x["op"], "case": x["case"], "first_call_s": x.get("first_call_s"),
                      "fwd_ms": x.get("fwd", {}).get("ms"), "fwd+bwd_ms": x.get("fwd+bwd", {}).get("ms"),
                      "speedup_vs_baseline_fwd": x.get("fwd", {}).get("speedup"), "error": x.get("error")}
                     for x in comp]
    done = all(i.get("rc") == 0 for i in runs) and len(runs) == 2
    ok = done and comp and all("error" not in x for x in comp)
    r["status"] = "ok" if ok else ("timed out" if any("skipped" in i for i in runs) else "failed")
    r["summary"] = f"torch.compile(backend={backend}) of the eager chains on {len(comp)} cases: " + ", ".join(
        f"{c['op']} {c['case']} compile {c['first_call_s'] or 0:.1f} s, fwd x{c['speedup_vs_baseline_fwd'] or 0:.2f} vs "
        f"{'sdpa' if c['op'] == 'attention' else 'eager'}" for c in r["compiled"])
    if backend == "eager":
        r["summary"] += " (dry run: dynamo tracing without code generation)"
    return r


# ---------------------------------------------------------------------------------------------
# 4a. data

def data_paths(work: Path) -> dict:
    return {"train": work / "data" / "train", "sample": work / "data" / "sample", "cache": work / "cache",
            "images": work / "images"}


def part_data(ctx: Ctx) -> dict:
    r = ctx.result
    p = data_paths(ctx.work)
    if ctx.dry_run:
        train = dict(videos=4, frames=8, size=32)
        sample_size, cache_size = 64, 16
    else:
        train = dict(videos=12, frames=24, size=128)
        sample_size, cache_size = 256, 128
    workers = 0 if ctx.dry_run else min(8, os.cpu_count() or 1)
    steps = []

    def step(name, *argv):  # `vidm ...` in this process (the part's limit bounds it)
        if ctx.remaining() < 2:
            steps.append({"step": name, "skipped": "no time left"})
            return False
        rc, wall = vidm_inprocess(argv)
        steps.append({"step": name, "rc": rc, "wall_s": wall, "argv": " ".join(map(str, argv))})
        r["steps"] = steps
        ctx.save()
        return rc == 0

    ok = step("synth train", "data", "synth", "--out", p["train"], "--videos", train["videos"],
              "--frames", train["frames"], "--size", train["size"], "--seed", ctx.seed, "--workers", workers, "--quiet")
    ok = step("synth sample", "data", "synth", "--out", p["sample"], "--videos", 1, "--frames", 8,
              "--size", sample_size, "--seed", ctx.seed + 1, "--quiet") and ok
    ok = step("cache latents", "data", "cache-latents", "--autoencoder", BUNDLED / "autoencoder", "--data", p["train"],
              "--out", p["cache"], "--size", cache_size, "--device", "cuda" if ctx.gpu else "cpu") and ok
    if (p["sample"] / "00000.mp4").exists():
        from PIL import Image

        from vidm.video import read_clip

        clip = read_clip(p["sample"] / "00000.mp4")
        p["images"].mkdir(parents=True, exist_ok=True)
        for name, i in (("a", 0), ("b", 4)):
            img = Image.fromarray(clip[i])
            img.save(p["images"] / f"{name}{sample_size}.png")
            img.resize((64, 64), Image.BICUBIC).save(p["images"] / f"{name}64.png")
        r["images"] = sorted(str(x) for x in p["images"].iterdir())
    r.update(train_data=train, cache_size=cache_size, sample_size=sample_size, paths={k: str(v) for k, v in p.items()})
    r["status"] = "ok" if ok else "failed"
    r["summary"] = (f"{train['videos']} synthetic videos of {train['frames']} frames at {train['size']} px, latent cache "
                    f"at {cache_size} px (bundled autoencoder), sample frames at {sample_size} px: "
                    + ", ".join(f"{s['step']} {s.get('wall_s', '-')} s" for s in steps))
    return r


# ---------------------------------------------------------------------------------------------
# 4b. train

def train_overrides(stage: str, ctx: Ctx) -> tuple[str, list[str]]:
    """(config file, key=value overrides) of one short run: the base preset's width at small
    data on a GPU; the tiny preset, shrunk further, in the dry run."""
    p = data_paths(ctx.work)
    common = [f"run.output_dir={ctx.work / 'runs'}", "run.log_every=1", "run.sample_every=0", "run.val_every=0",
              "run.checkpoint_every=0", "run.keep_checkpoints=1", "run.progress=false", "optim.warmup_steps=20",
              "data.val_clips=1"]
    ae = f"data.autoencoder={BUNDLED / 'autoencoder'}"
    if not ctx.dry_run:
        common += ["run.steps=300", "run.mixed_precision=bf16"]
        extra = {
            "autoencoder": [f"data.root={p['train']}", "data.size=128", "data.num_frames=2", "data.batch_size=4",
                            "data.num_workers=4"],
            "content": [f"data.latents={p['cache']}", ae, "data.batch_size=32", "data.num_workers=0"],
            "motion": [f"data.latents={p['cache']}", ae, "data.num_frames=16", "data.stride=1", "data.batch_size=4",
                       "data.num_workers=0"],
        }[stage]
        return f"configs/{stage}/base.yaml", common + extra
    # Triton's interpreter runs each program in Python: one step, the smallest models that still
    # have every kind of block (GroupNorm with and without modulation, spatial and temporal attention).
    common += ["run.steps=1", "run.mixed_precision=no", "data.batch_size=1", "data.num_workers=0"]
    shrink = ["model.model_channels=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1", "model.attn_levels=[1]",
              "model.norm_groups=2"]
    extra = {
        "autoencoder": [f"data.root={p['train']}", "data.size=16", "data.num_frames=1", "model.base_channels=8",
                        "model.ch_mult=[1,2]", "model.downsample_factor=2", "model.norm_groups=2",
                        "model.head_dim=16"],
        "content": [f"data.latents={p['cache']}", ae, *shrink],
        "motion": [f"data.latents={p['cache']}", ae, "data.num_frames=3", "data.stride=1", *shrink,
                   "model.temporal_levels=[1]"],
    }[stage]
    return f"configs/{stage}/tiny.yaml", common + extra


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in rec:
            rows.append(rec)
    return rows


def run_stats(rows: list[dict]) -> dict:
    if not rows:
        return {"steps": 0}
    times = [r["step_time"] for r in rows]
    skip = min(5, len(times) // 4)  # warm-up: the first steps compile kernels, tune cuDNN
    med = statistics.median(times[skip:])
    mem = [r["max_mem_gib"] for r in rows if "max_mem_gib" in r]
    return {"steps": rows[-1]["step"], "steps_per_s": 1 / med if med > 0 else None, "median_step_s": med,
            "first_step_s": times[0], "samples_per_sec_last": rows[-1].get("samples_per_sec"),
            "peak_mem_gib": max(mem) if mem else None, "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"]}


def compare_losses(a: list[dict], b: list[dict]) -> dict:
    """Loss agreement of two runs at equal steps (a = triton, b = torch)."""
    la = {r["step"]: r["loss"] for r in a}
    lb = {r["step"]: r["loss"] for r in b}
    common = sorted(set(la) & set(lb))
    if not common:
        return {"common_steps": 0}

    def rel(s):
        return abs(la[s] - lb[s]) / max(abs(lb[s]), 1e-8)

    tail = common[-min(20, len(common)):]
    mean_a = statistics.fmean(la[s] for s in tail)
    mean_b = statistics.fmean(lb[s] for s in tail)
    first = rel(common[0])
    return {"common_steps": len(common), "last_common_step": common[-1],
            "step1_triton": la[common[0]], "step1_torch": lb[common[0]], "step1_rel_diff": first,
            "max_rel_diff_first10": max(rel(s) for s in common[:10]),
            "tail_mean_triton": mean_a, "tail_mean_torch": mean_b,
            "tail_rel_diff": abs(mean_a - mean_b) / max(abs(mean_b), 1e-8), "tail_steps": len(tail),
            # Same weights, batch and noise at step 1: only the kernels' rounding differs.
            "agree": first <= 0.02}


def train_inprocess(stage: str, args: list[str], provider: str) -> dict:
    """`python -m vidm.train.<stage> ARGS` in this process with VIDM_KERNELS=provider (accelerate's
    singleton state reset around it, as the training tests do)."""
    import importlib

    from accelerate.state import AcceleratorState, GradientState

    from vidm.kernels import reset_settings

    log(f"$ VIDM_KERNELS={provider} python -m vidm.train.{stage} " + " ".join(args) + "   (in this process)")
    old = os.environ.get("VIDM_KERNELS")
    os.environ["VIDM_KERNELS"] = provider
    reset_settings()  # the kernels read VIDM_KERNELS once: make them read it again
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    t0 = time.time()
    try:
        rc = importlib.import_module(f"vidm.train.{stage}").main(args)
    except Exception:  # noqa: BLE001 - recorded like a failed process
        traceback.print_exc()
        rc = 1
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        if old is None:
            os.environ.pop("VIDM_KERNELS", None)
        else:
            os.environ["VIDM_KERNELS"] = old
        reset_settings()
    sys.stdout.flush()
    return {"rc": rc, "wall_s": round(time.time() - t0, 2), "stopped": False, "killed": False, "tail": "",
            "in_process": True}


def part_train(ctx: Ctx) -> dict:
    r = ctx.result
    runs_dir = ctx.work / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    accel = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
             "--mixed_precision", "no" if ctx.dry_run else "bf16", "--dynamo_backend", "no"]
    if ctx.dry_run:
        accel.append("--cpu")
    plan = [(s, p) for s in STAGES for p in PROVIDERS]
    save_reserve = 3.0 if ctx.dry_run else 7.0  # SIGTERM this long before the slot ends: the run saves
    r["runs"], r["comparisons"] = {}, {}
    metrics: dict[str, list[dict]] = {}
    for i, (stage, prov) in enumerate(plan):
        name = f"{stage}-{prov}"
        left = ctx.remaining() - 2
        slot = left / (len(plan) - i)
        if ctx.dry_run and i == 0:  # the one launched run of the dry run; the in-process ones are short
            slot = max(slot, min(45.0, left - 25))
        if slot < 5:
            r["runs"][name] = {"skipped": "no time left"}
            continue
        config, overrides = train_overrides(stage, ctx)
        if prov == "torch":  # equal steps: as many as the triton run reached
            done = r["runs"].get(f"{stage}-triton", {}).get("steps", 0)
            if done:
                overrides = [o for o in overrides if not o.startswith("run.steps=")] + [f"run.steps={done}"]
        args = ["--config", config, "--name", name, *overrides]
        if ctx.dry_run and i > 0:
            # The dry run proves the launch command with its first run; the others run in this
            # process (each `accelerate launch` costs two torch imports, most of a tiny CPU run).
            res = train_inprocess(stage, args, prov)
        else:
            cmd = [*accel, "-m", f"vidm.train.{stage}", *args]
            res = run_logged(ctx, cmd, timeout=slot, stop_at=max(1.0, slot - save_reserve),
                             env=ctx.child_env(VIDM_KERNELS=prov), logfile=ctx.work / f"train-{name}.log")
        rows = read_metrics(runs_dir / name / "metrics.jsonl")
        info = {"config": config, "overrides": overrides, "VIDM_KERNELS": prov, "slot_s": round(slot, 1),
                **{k: v for k, v in _short(res).items() if k != "tail"}, **run_stats(rows),
                "model_saved": (runs_dir / name / "model" / "config.json").exists()}
        if res["rc"] != 0:
            info["tail"] = res["tail"]
        info["loss_curve"] = [[x["step"], x["loss"]] for x in rows]
        r["runs"][name] = info
        metrics[name] = rows
        if prov == "torch":
            r["comparisons"][stage] = compare_losses(metrics.get(f"{stage}-triton", []), rows)
        ctx.save()
    bad = [n for n, x in r["runs"].items() if x.get("rc") not in (0,) and not x.get("stopped")]
    disagree = [s for s, c in r["comparisons"].items() if not c.get("agree")]
    skipped = [n for n, x in r["runs"].items() if "skipped" in x]
    r["status"] = "failed" if bad or disagree else ("timed out" if skipped else "ok")
    parts = []
    for s in STAGES:
        t, o = r["runs"].get(f"{s}-triton", {}), r["runs"].get(f"{s}-torch", {})
        c = r["comparisons"].get(s, {})
        sps = lambda x: f"{x['steps_per_s']:.2f}" if x.get("steps_per_s") else "-"  # noqa: E731
        parts.append(f"{s}: {t.get('steps', 0)}/{o.get('steps', 0)} steps, {sps(t)}/{sps(o)} steps/s"
                     + (f", step-1 loss diff {c['step1_rel_diff']:.1e}" if "step1_rel_diff" in c else ""))
    r["summary"] = "triton/torch: " + "; ".join(parts)
    return r


# ---------------------------------------------------------------------------------------------
# 4c. sample

def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def _pipeline_for(ctx: Ctx, size: int, r: dict) -> tuple[Path, str]:
    """A pipeline folder for `size`: the base-width models of the train part packed, else the
    bundled tiny models run at that size."""
    runs = ctx.work / "runs"
    for prov in PROVIDERS:
        dirs = {s: runs / f"{s}-{prov}" for s in STAGES}
        if all((d / "model" / "config.json").exists() for d in dirs.values()):
            out = ctx.work / f"pipeline-{prov}-{size}"
            window = 4 if ctx.dry_run else 16
            rc, wall = vidm_inprocess(["pack", "--autoencoder", dirs["autoencoder"], "--content", dirs["content"],
                                       "--motion", dirs["motion"], "--size", size, "--window", window, "-o", out])
            r.setdefault("pack", []).append({"provider": prov, "rc": rc, "wall_s": wall})
            if rc == 0:
                return out, f"the train part's {prov} models ({'tiny, shrunk' if ctx.dry_run else 'base width'}), packed"
    out = ctx.work / f"pipeline-bundled-{size}"
    if not out.exists():
        shutil.copytree(BUNDLED, out)
        cfg = json.loads((out / "pipeline.json").read_text())
        cfg["size"] = size
        (out / "pipeline.json").write_text(json.dumps(cfg, indent=2))
    return out, f"bundled synth-tiny models at size {size}"


def part_sample(ctx: Ctx) -> dict:
    r = ctx.result
    p = data_paths(ctx.work)
    out = ctx.work / "sample"
    out.mkdir(parents=True, exist_ok=True)
    big = 64 if ctx.dry_run else 256
    imgs = {s: (p["images"] / f"a{s}.png", p["images"] / f"b{s}.png") for s in (64, big)}
    if not all(x.exists() for pair in imgs.values() for x in pair):
        from PIL import Image

        p["images"].mkdir(parents=True, exist_ok=True)
        for s, (a, b) in imgs.items():  # the data part did not run: plain gradients will do
            for path, shift in ((a, 0), (b, 40)):
                Image.linear_gradient("L").resize((s, s)).convert("RGB").rotate(shift).save(path)
    steps = ["--steps", "2"] if ctx.dry_run else []
    n_interp, n_gen = (3, 4) if ctx.dry_run else (7, 16)
    common = ["--seed", "1", "--quiet", *steps]
    r["commands"] = []

    def timed(label, argv, size, model, videos=1):
        if ctx.remaining() < 3:
            r["commands"].append({"what": label, "skipped": "no time left"})
            return None
        rc, wall = vidm_inprocess(argv)
        rec = {"what": label, "size": size, "model": model, "rc": rc, "wall_s": wall,
               "s_per_video": round(wall / videos, 2), "argv": " ".join(map(str, argv))}
        r["commands"].append(rec)
        ctx.save()
        return rec

    a64, b64 = imgs[64]
    interp = ["interpolate", a64, b64, "--frames", n_interp, *common]
    timed("interpolate (cold: CUDA init, model load)", [*interp, "-o", out / "i64-1.mp4", "--strip", out / "i64-1.png"],
          64, "bundled")
    timed("interpolate (warm, same seed)", [*interp, "-o", out / "i64-2.mp4", "--strip", out / "i64-2.png"], 64, "bundled")
    # The same command in a fresh process: same seed -> same bytes, across processes too.
    if ctx.remaining() > 5:
        res = run_logged(ctx, vidm_cmd(*interp, "-o", out / "i64-3.mp4", "--strip", out / "i64-3.png"),
                         timeout=ctx.remaining() - 2)
        r["commands"].append({"what": "interpolate (new process, same seed)", "size": 64, "model": "bundled",
                              "rc": res["rc"], "wall_s": res["wall_s"], "s_per_video": res["wall_s"]})
    hashes = {f"i64-{i}.{ext}": _sha(out / f"i64-{i}.{ext}") for i in (1, 2, 3) for ext in ("mp4", "png")}
    r["hashes"] = hashes
    same = {ext: len({hashes[f"i64-{i}.{ext}"] for i in (1, 2, 3)}) == 1 and hashes[f"i64-1.{ext}"] is not None
            for ext in ("mp4", "png")}
    r["same_seed_same_bytes"] = same
    ctx.save()
    timed("generate", ["generate", "--frames", n_gen, *common, "-o", out / "g64.mp4"], 64, "bundled")
    if ctx.remaining() > 10:
        model, what = _pipeline_for(ctx, big, r)
        r["big_model"] = what
        a, b = imgs[big]
        timed("generate", ["generate", "--model", model, "--frames", n_gen, *common, "-o", out / f"g{big}-big.mp4"],
              big, what)
        timed("interpolate", ["interpolate", a, b, "--model", model, "--frames", n_interp, *common,
                              "-o", out / f"i{big}-big.mp4"], big, what)
    else:
        r["commands"].append({"what": f"generate / interpolate at {big} px", "skipped": "no time left"})
    ok_cmds = all(c.get("rc") == 0 for c in r["commands"])
    skipped = any("skipped" in c for c in r["commands"])
    r["status"] = "failed" if not ok_cmds and not skipped else (
        "timed out" if skipped else ("ok" if all(same.values()) else "failed"))
    r["summary"] = ", ".join(f"{c['what'].split(' (')[0]} {c['size']}px {c['s_per_video']} s/video"
                             for c in r["commands"] if "s_per_video" in c and c.get("rc") == 0) + \
        f"; same seed same bytes: mp4 {same['mp4']}, png {same['png']}"
    return r


PARTS = {"install": part_install, "env": part_env, "kernel_tests": part_kernel_tests, "sweep": part_sweep,
         "bench": part_bench, "bench_compile": part_bench_compile, "data": part_data, "train": part_train,
         "sample": part_sample}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name, ctx_path = argv
    ctx = Ctx(ctx_path)
    os.chdir(ctx.repo)
    try:
        PARTS[name](ctx)
    except BaseException as e:  # recorded in the result; the orchestrator goes on with the next part
        traceback.print_exc()
        ctx.result["status"] = "failed"
        ctx.result["error"] = f"{type(e).__name__}: {str(e).strip()[:500]}"
        ctx.result.setdefault("summary", ctx.result["error"])
        ctx.save()
        return 1
    ctx.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
