"""The GPU check's orchestrator: runs the parts one after another, each in its own process
group under a hard time limit, and rewrites report.json and report.md after every change (a
run cut off at any point still reports what it did). Standard library only: it never imports
torch, so a part that breaks CUDA or hangs in a compiler cannot take it down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidm.gpucheck import PARTS, Part
from vidm.gpucheck.proc import run_part
from vidm.gpucheck.report import clean_json, render_markdown

REPO = Path(__file__).resolve().parents[2]
FORMAT = "vidm-gpucheck-1"
LOG_NAME = "log.txt"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def default_out() -> str:
    return os.environ.get("OUT") or "gpu_check_report"


def parse_limits(items: list[str]) -> dict[str, float]:
    out = {}
    names = {p.name for p in PARTS}
    for item in items:
        for piece in item.split(","):
            if not piece.strip():
                continue
            name, sep, value = piece.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise SystemExit(f"gpucheck: --limit {piece!r}: expected PART=SECONDS with PART one of "
                                 f"{', '.join(sorted(names))}")
            try:
                out[name] = float(value)
            except ValueError:
                raise SystemExit(f"gpucheck: --limit {piece!r}: {value!r} is not a number of seconds") from None
            if out[name] <= 0:
                raise SystemExit(f"gpucheck: --limit {piece!r}: must be > 0")
    return out


def _names(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = {p.name for p in PARTS}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"gpucheck: {flag}: unknown part(s) {', '.join(bad)}; parts: {', '.join(p.name for p in PARTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vidm.gpucheck",
        description="One prepared GPU check: environment, kernel correctness, kernel speed and end-to-end "
                    "training and sampling, each part under a hard time limit, reported as it goes in "
                    "OUT/report.json and OUT/report.md (plus OUT/log.txt). scripts/gpu_check.sh runs it.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default: $OUT if set, else gpu_check_report)")
    p.add_argument("--dry-run", action="store_true",
                   help="the whole check on the CPU with tiny shapes and Triton's interpreter (CI; < 2 min)")
    p.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                   help="override a part's time limit (repeatable, or comma-separated)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="the whole run's limit: no part runs past it (default 475 on a GPU, 200 dry)")
    p.add_argument("--only", default=None, metavar="PARTS", help="run only these parts (comma-separated)")
    p.add_argument("--skip", default=None, metavar="PARTS", help="skip these parts (comma-separated)")
    p.add_argument("--install", choices=("auto", "always", "never"), default="auto",
                   help="install part: auto = pip-install the project (+ gpu extra, pytest) when something is "
                        "missing; always; never (default auto; the dry run never installs)")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="scratch folder for data, runs and logs (default: a new temporary folder)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder (default: removed at the end)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep and the synthetic data (default 0)")
    p.add_argument("--list", action="store_true", help="print the parts and their time limits, then exit")
    return p


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = args.dry_run
        self.out = Path(args.out or default_out()).resolve()
        self.limits = {p.name: (p.dry_limit if self.dry else p.limit) for p in PARTS}
        self.limits.update(parse_limits(args.limit))
        self.budget = args.budget if args.budget is not None else (200.0 if self.dry else 475.0)
        only, skip = _names(args.only, "--only"), _names(args.skip, "--skip") or []
        self.selected = [p for p in PARTS if (only is None or p.name in only) and p.name not in skip]
        self.t0 = time.time()
        self.report: dict = {}
        self.current = None

    # ---- report
    def save(self) -> None:
        r = self.report
        r["elapsed_s"] = round(time.time() - self.t0, 1)
        r["updated"] = _now()
        _write(self.out / "report.json", json.dumps(clean_json(r), indent=2, allow_nan=False))
        _write(self.out / "report.md", render_markdown(r))

    def _part_entry(self, part: Part) -> dict:
        return self.report["parts"][part.name]

    # ---- running
    def gpu_present(self) -> bool:
        env = self.report["parts"].get("env", {}).get("result", {})
        if "cuda_available" in env:
            return bool(env["cuda_available"])
        exe = shutil.which("nvidia-smi")  # the env part did not say: ask the driver
        if exe is None:
            return False
        try:
            return subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def child_env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        if self.dry:  # the dry run behaves the same on any machine: CPU, Triton's interpreter
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["TRITON_INTERPRET"] = "1"
            env.setdefault("OMP_NUM_THREADS", "1")
        env.pop("VIDM_KERNELS", None)  # each part sets the providers it compares
        return env

    def run(self) -> int:
        a = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="vidm-gpucheck-"))
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        logf = self.out / LOG_NAME
        logf.write_text("")
        self.report = {
            "format": FORMAT, "started": _now(), "finished": None, "dry_run": self.dry, "repo": str(REPO),
            "argv": sys.argv[1:], "out": str(self.out), "work": str(work), "budget_s": self.budget,
            "limits_s": self.limits, "gpu": None, "log": LOG_NAME,
            "parts": {p.name: {"title": p.title, "status": "pending", "limit_s": self.limits[p.name],
                               "gpu_only": p.gpu_only} for p in PARTS},
        }
        for p in PARTS:
            if p not in self.selected:
                self.report["parts"][p.name].update(status="skipped", reason="not selected (--only/--skip)")
        self.save()
        deadline_all = self.t0 + self.budget
        exit_code = 0
        try:
            for part in self.selected:
                entry = self._part_entry(part)
                if part.gpu_only and not self.dry and not self.gpu_present():
                    entry.update(status="skipped", reason="no GPU")
                    self.save()
                    continue
                left = deadline_all - time.time()
                limit = min(self.limits[part.name], left)
                if left < 3:
                    entry.update(status="skipped", reason=f"no time left in the {self.budget:g} s budget")
                    self.save()
                    continue
                self.run_one(part, limit, work, logf)
                if part.name == "env":
                    self.report["gpu"] = self.gpu_present()
                if entry["status"] not in ("ok", "skipped"):
                    exit_code = 1
        except KeyboardInterrupt:
            for entry in self.report["parts"].values():
                if entry["status"] in ("running", "pending"):
                    entry["status"] = "interrupted" if entry["status"] == "running" else "skipped"
                    entry.setdefault("reason", "the check was interrupted")
            exit_code = 130
        finally:
            self.report["finished"] = _now()
            self.save()
            if not a.keep_work and not a.work:
                shutil.rmtree(work, ignore_errors=True)
        print(f"gpucheck: report in {self.out / 'report.md'} ({self.out / 'report.json'}); "
              f"{time.time() - self.t0:.0f} s", flush=True)
        return exit_code

    def run_one(self, part: Part, limit: float, work: Path, logf: Path) -> None:
        entry = self._part_entry(part)
        ctx_path = work / f"ctx-{part.name}.json"
        result_path = work / f"result-{part.name}.json"
        result_path.unlink(missing_ok=True)
        ctx = {"part": part.name, "dry_run": self.dry, "gpu": bool(self.report.get("gpu")), "repo": str(REPO),
               "work": str(work), "seed": self.args.seed, "install": self.args.install,
               # The part's own deadline leaves a little for its last save before the hard kill.
               "deadline": time.time() + max(1.0, limit - 2.0), "result": str(result_path)}
        ctx_path.write_text(json.dumps(ctx))
        start = time.time()
        entry.update(status="running", started=_now(), limit_s=round(limit, 1))
        self.save()
        with open(logf, "a") as f:
            f.write(f"\n===== {part.name} (limit {limit:.0f} s) {_now()} =====\n")
            f.flush()
            offset = f.tell()
            res = run_part([sys.executable, "-m", "vidm.gpucheck.parts", part.name, str(ctx_path)],
                           timeout=limit, env=self.child_env(), cwd=str(REPO), stdout=f)
        wall = time.time() - start
        result = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = {"error": "result file unreadable (killed while writing?)"}
        status = result.pop("status", None)
        if res["timed_out"]:
            status = "timed out"
        elif status in (None, "running"):
            status = "failed"
        entry.update(status=status, wall_s=round(wall, 1), returncode=res["rc"],
                     summary=result.pop("summary", None), result=result)
        if res["timed_out"]:
            entry["reason"] = f"killed at its {limit:.0f} s limit; the result holds what it had done"
        if status not in ("ok", "skipped"):
            with open(logf, errors="replace") as f:
                f.seek(offset)
                entry["log_tail"] = "\n".join(f.read().strip().splitlines()[-25:])
        self.save()
        print(f"gpucheck: {part.name}: {status} in {wall:.1f} s (limit {limit:.0f} s)"
              + (f": {entry['summary']}" if entry.get("summary") else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for p in PARTS:
            print(f"{p.name:<14} {p.limit:>5.0f} s GPU  {p.dry_limit:>5.0f} s dry  {'GPU-only' if p.gpu_only else '':<8} "
                  f"{p.title}")
        print(f"{'total':<14} {sum(p.limit for p in PARTS):>5.0f} s GPU  {sum(p.dry_limit for p in PARTS):>5.0f} s dry")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    return Runner(args).run()


def _interrupt(signum, frame):
    # SIGTERM (e.g. a machine's time running out) ends the run like Ctrl-C: the report is written.
    raise KeyboardInterrupt
