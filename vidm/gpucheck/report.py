"""report.md from report.json's dict (standard library only; any part may be missing or cut off)."""

from __future__ import annotations


def clean_json(obj):
    """A JSON-safe copy: NaN / inf become strings, tuples lists, other objects their str()."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def status_text(entry: dict) -> str:
    s = entry.get("status", "pending")
    if s == "skipped" and entry.get("reason"):
        return f"skipped: {entry['reason']}"
    return s


def _f(v, fmt="{:.3g}", none="-") -> str:
    if v is None or isinstance(v, str):
        return none if v is None else v
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return out


def _install(r: dict) -> list[str]:
    lines = []
    if r.get("command"):
        lines.append(f"- command: `{r['command']}`")
    if r.get("note"):
        lines.append(f"- {r['note']}")
    if "install_s" in r:
        lines.append(f"- install time: {r['install_s']} s")
    for a in r.get("attempts", []):
        lines.append(f"- `{a['command']}`: rc {a['rc']} in {a['wall_s']} s")
    lines.append(f"- project installed before: {r.get('project_installed') or 'no'}; missing before: "
                 f"{', '.join(r.get('missing') or []) or 'nothing'}"
                 + (f"; gpu extra missing: {', '.join(r['missing_gpu_extra'])}" if r.get("missing_gpu_extra") else ""))
    if "missing_after" in r:
        lines.append(f"- missing after: {', '.join(r['missing_after']) or 'nothing'}")
    return lines


ENV_KEYS = ["gpu_name", "gpu_memory_gib", "capability", "sm_count", "gpu_count", "driver", "driver_cuda",
            "nvidia_smi_gpus", "torch", "torch_cuda", "cudnn", "triton", "triton_interpreted", "xformers",
            "xformers_importable", "accelerate", "numpy", "av", "pytest", "pytest_xdist", "vidm", "kernels_from",
            "python", "platform", "host", "cpus", "ram_gib", "disk_free_gib", "git_commit", "torch_import_s",
            "cuda_init_s", "bf16_supported"]


def _env(r: dict) -> list[str]:
    return _table(["key", "value"], [[k, _f(r.get(k), "{}")] for k in ENV_KEYS if k in r])


def _kernel_tests(r: dict) -> list[str]:
    lines = [f"- `{r.get('command', '')}`", f"- pytest: {r.get('final_line') or 'no summary line'}"]
    if r.get("failed"):
        lines.append("- failed: " + ", ".join(f"`{t}`" for t in r["failed"][:30]))
    gpu = r.get("gpu_only") or {}
    if gpu:
        counts: dict[str, int] = {}
        for v in gpu.values():
            counts[v] = counts.get(v, 0) + 1
        lines.append(f"- GPU-only cases (`test_*gpu*`): {len(gpu)}, " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        bad = [k for k, v in gpu.items() if v in ("failed", "error")]
        if bad:
            lines.append("- GPU-only failures: " + ", ".join(f"`{k}`" for k in bad))
    return lines


def _sweep(r: dict) -> list[str]:
    lines = [f"- preset {r.get('preset')}, seed {r.get('seed')}, {len(r.get('records', []))} of "
             f"{r.get('planned')} planned cases run; per-position modulation: {r.get('per_position_modulation')}"]
    by = r.get("by_dtype") or {}
    if by:
        lines += [""] + _table(["op dtype", "cases", "within tolerance", "worst err / tol"],
                        [[k, v["cases"], v["ok"], _f(v["worst_err_over_tol"], "{:.2f}")] for k, v in sorted(by.items())])
    bad = [x for x in r.get("records", []) if not x.get("ok")]
    if bad:
        lines.append("")
        lines += _table(["op", "case", "shape", "dtype", "layout", "problem"],
                        [[x["op"], x["label"], "x".join(map(str, x.get("shape", []))), x["dtype"], x["layout"],
                          x.get("error") or ", ".join(f"{k} {_f(v, '{:.2e}')}" for k, v in x.get("errors", {}).items())
                          + f" (tol {x['tol']:.0e})"] for x in bad[:20]])
    return lines


def _targets(r: dict) -> list[str]:
    lines = []
    for t in r.get("targets", []):
        lines.append(f"- **{'met' if t['ok'] else 'MISSED'}** {t['target']}: {_f(t['value'], '{:.2f}', 'n/a')}")
    if not r.get("targets"):
        lines.append("- no Triton rows (no GPU): targets not checked")
    return lines


def _ratios(rows: list[dict]) -> list[str]:
    lines = []
    att = [x for x in rows if x["op"] == "attention"]
    if att:
        names = [n for n in ("sdpa", "sdpa_flash", "sdpa_efficient", "xformers", "eager", "compiled")
                 if any(f"{n}_ms" in x for x in att)]
        lines.append("Attention: ms of each provider; in brackets its time over Triton's (> 1: Triton faster).")
        lines.append("")
        lines += _table(["case", "pass", "triton ms", *names],
                        [[x["case"], x["pass"], _f(x["triton_ms"]),
                          *[(_f(x.get(f"{n}_ms")) + (f" ({x[f'{n}/triton']:.2f}x)" if f"{n}/triton" in x else ""))
                            for n in names]] for x in att])
    gn = [x for x in rows if x["op"] == "group_norm"]
    if gn:
        names = [n for n in ("eager", "compiled") if any(f"{n}_ms" in x for x in gn)]
        lines += ["", "GroupNorm + scale/shift + SiLU: ms; Triton's share of the measured copy bandwidth.", ""]
        lines += _table(["case", "pass", "triton ms", "triton % bw", *names],
                        [[x["case"], x["pass"], _f(x["triton_ms"]),
                          _f(100 * x["triton_peak_fraction"] if x.get("triton_peak_fraction") is not None else None,
                             "{:.0f}%"),
                          *[(_f(x.get(f"{n}_ms")) + (f" ({x[f'{n}/triton']:.2f}x)" if f"{n}/triton" in x else ""))
                            for n in names]] for x in gn])
    return lines


def _bench(r: dict) -> list[str]:
    lines = _targets(r)
    for run in r.get("runs", []):
        if run.get("peaks"):
            pk = run["peaks"]
            lines.append(f"- {run['op']}: {run.get('device')}, measured copy {pk['copy_GBps']:.0f} GB/s, "
                         f"{pk['matmul_dtype']} matmul {pk['matmul_TFLOPs']:.3g} TFLOP/s; {run['wall_s']} s")
        elif run.get("skipped"):
            lines.append(f"- {run['op']}: skipped ({run['skipped']})")
        else:
            lines.append(f"- {run['op']}: rc {run.get('rc')}")
    for e in r.get("errors", [])[:10]:
        lines.append(f"- error: {e}")
    lines.append("")
    return lines + _ratios(r.get("ratios", []))


def _bench_compile(r: dict) -> list[str]:
    lines = _table(["op", "case", "compile s", "fwd ms", "fwd+bwd ms", "fwd speedup vs sdpa / eager", "error"],
                   [[c["op"], c["case"], _f(c["first_call_s"], "{:.1f}"), _f(c["fwd_ms"]), _f(c["fwd+bwd_ms"]),
                     _f(c["speedup_vs_baseline_fwd"], "{:.2f}"), c.get("error") or ""] for c in r.get("compiled", [])])
    return lines + [""] + _ratios(r.get("ratios", []))


def _data(r: dict) -> list[str]:
    return [f"- {s['step']}: " + (f"rc {s['rc']} in {s['wall_s']} s" if "rc" in s else s.get("skipped", ""))
            for s in r.get("steps", [])]


def _train(r: dict) -> list[str]:
    rows = []
    for name, x in (r.get("runs") or {}).items():
        if "skipped" in x:
            rows.append([name, "skipped: " + x["skipped"]] + [""] * 7)
            continue
        end = "ended" if not x.get("stopped") else "stopped by its slot"
        rows.append([name, f"rc {x.get('rc')}, {end}", x.get("steps", 0), _f(x.get("steps_per_s"), "{:.2f}"),
                     _f(x.get("first_step_s"), "{:.1f}"), _f(x.get("peak_mem_gib"), "{:.2f}"),
                     _f(x.get("loss_first"), "{:.4f}"), _f(x.get("loss_last"), "{:.4f}"),
                     f"{x.get('wall_s', '-')} / {x.get('slot_s', '-')}"])
    lines = _table(["run", "outcome", "steps", "steps/s", "first step s", "peak GiB", "loss step 1", "loss last",
                    "wall / slot s"], rows)
    lines.append("")
    for stage, c in (r.get("comparisons") or {}).items():
        if not c.get("common_steps"):
            lines.append(f"- {stage}: no common steps to compare")
            continue
        lines.append(f"- {stage}: {c['common_steps']} equal steps; step 1 loss triton {c['step1_triton']:.5f} vs torch "
                     f"{c['step1_torch']:.5f} (rel diff {c['step1_rel_diff']:.1e}, "
                     f"{'agree' if c['agree'] else 'DISAGREE'}); max rel diff over the first 10 steps "
                     f"{c['max_rel_diff_first10']:.1e}; mean of the last {c['tail_steps']}: {c['tail_mean_triton']:.4f} vs "
                     f"{c['tail_mean_torch']:.4f} (rel diff {c['tail_rel_diff']:.1e})")
    return lines


def _sample(r: dict) -> list[str]:
    lines = _table(["command", "size", "model", "rc", "wall s", "s / video"],
                   [[c["what"], c.get("size", "-"), c.get("model", "-"), c.get("rc", c.get("skipped", "-")),
                     c.get("wall_s", "-"), c.get("s_per_video", "-")] for c in r.get("commands", [])])
    same = r.get("same_seed_same_bytes")
    if same:
        lines += ["", f"- same seed, same bytes (in-process twice and a new process): mp4 {same['mp4']}, "
                      f"png {same['png']}"]
    return lines


DETAILS = {"install": _install, "env": _env, "kernel_tests": _kernel_tests, "sweep": _sweep, "bench": _bench,
           "bench_compile": _bench_compile, "data": _data, "train": _train, "sample": _sample}


def render_markdown(rep: dict) -> str:
    parts = rep.get("parts", {})
    env = parts.get("env", {}).get("result", {})
    lines = ["# vidm GPU check", ""]
    lines.append(f"- mode: {'dry run (CPU, tiny shapes, Triton interpreter)' if rep.get('dry_run') else 'GPU check'}")
    lines.append(f"- started {rep.get('started')}, " + (f"finished {rep['finished']}" if rep.get("finished")
                                                         else "**still running or cut off**")
                 + f", {rep.get('elapsed_s', 0)} s of the {rep.get('budget_s')} s budget")
    if env:
        lines.append(f"- machine: {parts['env'].get('summary') or '-'}")
    lines += ["", "## Parts", ""]
    lines += _table(["part", "status", "time s", "limit s", "summary"],
                    [[name, status_text(p), p.get("wall_s", "-"), _f(p.get("limit_s"), "{:g}"), p.get("summary") or ""]
                     for name, p in parts.items()])
    for name, p in parts.items():
        lines += ["", f"## {p.get('title', name)}", "", f"Status: **{status_text(p)}**"
                  + (f" ({p['wall_s']} s of {_f(p.get('limit_s'), '{:g}')} s)" if "wall_s" in p else "")]
        if p.get("reason") and p.get("status") != "skipped":
            lines.append(f"({p['reason']})")
        res = p.get("result") or {}
        if res.get("error"):
            lines += ["", f"Error: `{res['error']}`"]
        if res and name in DETAILS:
            try:
                body = DETAILS[name](res)
            except (KeyError, TypeError, ValueError) as e:  # a cut-off result: say so, keep the rest
                body = [f"(details unavailable: {type(e).__name__}: {e})"]
            if body:
                lines += [""] + body
        if p.get("log_tail"):
            lines += ["", "Last lines of its log:", "", "```", p["log_tail"], "```"]
    return "\n".join(lines) + "\n"
