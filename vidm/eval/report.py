"""Report pieces shared by `vidm eval interpolate` and `vidm eval generate`: confidence
intervals, JSON that is strict (no NaN), markdown tables, matplotlib figures, atomic writes.

Intervals: a two-sided 95% Student-t interval over clips, mean ± t(0.975, n-1) · s / sqrt(n)
with s the sample standard deviation (ddof 1). Clips are the unit (they are independent draws
from the data); it assumes the clip means are roughly normal, which holds well for n >= ~20
and is what frame-interpolation papers' error bars usually mean. NaN values (a metric that
does not apply to a clip, e.g. no object visible enough to score) are left out and `n` says
how many remained.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from vidm.errors import DependencyError

INTERVAL = "95% t-interval over clips: mean ± t(0.975, n-1)·s/√n, clipped to the metric's range"

# name -> (label, unit, better): "higher" or "lower"
METRICS: dict[str, tuple[str, str, str]] = {
    "psnr": ("PSNR", "dB", "higher"),
    "ssim": ("SSIM", "", "higher"),
    "pos_err": ("position error", "px", "lower"),
    "miss_rate": ("miss rate", "", "lower"),
    "warp_err": ("warping error", "", "lower"),
    "diversity": ("diversity", "", "higher"),
}


# ---------------------------------------------------------------------------------- statistics


# The range each metric's mean can take: intervals are clipped to it (a miss rate is never < 0).
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "psnr": (0.0, 100.0), "ssim": (-1.0, 1.0), "pos_err": (0.0, math.inf), "miss_rate": (0.0, 1.0),
    "warp_err": (0.0, 1.0), "diversity": (0.0, 1.0),
}


def t_interval(values, level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean and Student-t interval of the finite values -> {mean, lo, hi, std, n}.

    n == 0 gives NaN everywhere; n == 1 gives the mean with a NaN interval (no spread known).
    bounds: the range the true mean must lie in; the interval is clipped to it.
    """
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "std": math.nan, "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "std": math.nan, "n": 1}
    std = float(v.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "lo": lo, "hi": hi, "std": std, "n": n}


def paired_difference(a, b, level: float = 0.95) -> dict:
    """Interval of the per-clip differences a - b (same clips, same order): a paired t-interval,
    much tighter than comparing two separate intervals because clip difficulty cancels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return t_interval(a - b, level)


# ---------------------------------------------------------------------------------- JSON


def json_safe(obj):
    """numpy scalars/arrays -> Python; NaN and ±inf -> None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(report: dict) -> str:
    return json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------- markdown


def fmt(x, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_interval(s: dict, digits: int = 2) -> str:
    """'31.20 [30.81, 31.59]' (or just the mean when there is no interval)."""
    if s is None or s.get("n", 0) == 0:
        return "—"
    if not math.isfinite(s["lo"]):
        return fmt(s["mean"], digits)
    return f"{fmt(s['mean'], digits)} [{fmt(s['lo'], digits)}, {fmt(s['hi'], digits)}]"


def metric_header(name: str) -> str:
    label, unit, better = METRICS[name]
    return f"{label}{f' ({unit})' if unit else ''} {'↑' if better == 'higher' else '↓'}"


def metric_digits(name: str) -> int:
    return {"ssim": 3, "miss_rate": 3, "warp_err": 4, "diversity": 4}.get(name, 2)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- figures


def require_matplotlib():
    """Import matplotlib with a headless backend, or raise a one-line DependencyError."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DependencyError("report.png needs matplotlib: pip install 'vidm[eval]' (or pass --no-plot)") from e
    return plt


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def strip_scale(height: int) -> int:
    """Integer upscaling so small frames (16-64 px) are visible in a figure."""
    return max(1, min(8, 128 // max(height, 1)))


def show_strip(ax, strip: np.ndarray, labels: list[str], title: str) -> None:
    """Draw a `make_strip` image (rows of equal height) with row labels on the y axis."""
    ax.imshow(strip, interpolation="nearest")
    pitch = strip.shape[0] / len(labels)
    ax.set_yticks([(i + 0.5) * pitch for i in range(len(labels))], labels)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9, loc="left")


def errorbar_panel(ax, xs, series: dict[str, list[dict]], name: str, colours: dict | None = None) -> None:
    """One metric vs gap: a line per method, 95% interval as error bars."""
    for i, (method, stats) in enumerate(series.items()):
        mean = np.array([s["mean"] if s else np.nan for s in stats], float)
        lo = np.array([s["lo"] if s else np.nan for s in stats], float)
        hi = np.array([s["hi"] if s else np.nan for s in stats], float)
        err = np.nan_to_num(np.stack([mean - lo, hi - mean]), nan=0.0)
        # Nudge methods sideways a little so overlapping bars stay readable.
        x = np.asarray(xs, float) * (1 + 0.025 * (i - (len(series) - 1) / 2))
        ax.errorbar(x, mean, yerr=err, marker="o", ms=4, capsize=3, label=method,
                    color=(colours or {}).get(method))
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(xs), [str(g) for g in xs])
    ax.minorticks_off()
    ax.set_xlabel("gap (frames)")
    ax.set_title(metric_header(name), fontsize=10)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------------- writing


def write_files(out: str | os.PathLike, files: dict[str, bytes | str]) -> list[Path]:
    """Write all report files into `out`, each atomically (temp file + rename), so an
    interrupted or failed run never leaves a half-written report (`vidm eval` writes them into
    a staged folder; see vidm.outputs)."""
    from vidm.outputs import usual_modes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        raw = data.encode() if isinstance(data, str) else data
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            usual_modes(tmp)  # mkstemp makes 0600
            os.replace(tmp, out / name)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        written.append(out / name)
    return written


# ---------------------------------------------------------------------------------- interpolation


def _label(method: str) -> str:
    return method.replace("_best_of_", " best/") if "_best_of_" in method else method  # model_best_of_4: model best/4


def _present_metrics(summary: dict) -> list[str]:
    seen = {k for per_gap in summary.values() for cols in per_gap.values() for k in cols}
    return [k for k in METRICS if k in seen]


def _settings_lines(s: dict) -> list[str]:
    return [f"- **{k}**: {v if not isinstance(v, (list, tuple)) else ', '.join(map(str, v))}" for k, v in s.items()]


def interpolation_markdown(report: dict) -> str:
    """report.md for `vidm eval interpolate`: settings, the method x gap x metric table, the paired
    model-minus-baseline table and the definitions."""
    summary, gaps = report["summary"], report["gaps"]
    metrics = _present_metrics(summary)
    oracle = [m for m in summary if "_best_of_" in m]  # model_best_of_S, model-bidirectional_best_of_S, ...
    out = ["# vidm eval interpolate", ""]
    out += _settings_lines(report["settings"])
    out += [f"- **time**: {report['timing']['total_s']:.1f} s", ""]
    out += [f"Mean over clips and, in brackets, the {INTERVAL}. ↑ higher is better, ↓ lower is better; "
            "the best method per gap is in bold" + (" (the best-of-S oracle row excluded)" if oracle else "") + ".",
            ""]
    rows = []
    for g in gaps:
        gk = str(g)
        best = {}
        for k in metrics:
            vals = {m: summary[m][gk].get(k, {}).get("mean", math.nan) for m in summary if m not in oracle}
            vals = {m: v for m, v in vals.items() if v is not None and math.isfinite(v)}
            if len(vals) > 1:
                pick = max if METRICS[k][2] == "higher" else min
                best[k] = pick(vals, key=vals.get)
        for m in summary:
            cells = []
            for k in metrics:
                c = fmt_interval(summary[m][gk].get(k), metric_digits(k))
                cells.append(f"**{c}**" if best.get(k) == m else c)
            rows.append([str(g), _label(m), *cells])
    out += [markdown_table(["gap", "method", *[metric_header(k) for k in metrics]], rows), ""]
    if report.get("paired"):
        keys = [k for k in ("psnr", "ssim", "pos_err", "miss_rate", "warp_err") if k in metrics]
        out += ["## Model minus baseline, paired over the same clips", "",
                "Mean per-clip difference with its 95% paired t-interval; an interval that excludes 0 is a "
                "difference beyond clip-sampling noise. Positive PSNR/SSIM and negative error = model better.", ""]
        rows = [[cmp, str(g), *[fmt_interval(report["paired"][cmp][str(g)].get(k), metric_digits(k)) for k in keys]]
                for cmp in report["paired"] for g in gaps]
        out += [markdown_table(["comparison", "gap", *[metric_header(k).rstrip(" ↑↓") for k in keys]], rows), ""]
    out += ["## Definitions", "",
            "- Clip: frames s..s+G of one video (G = largest gap); for gap g every method gets frames s and s+g "
            "and makes the g-1 frames between, scored against the true ones (same clips and starts for every "
            "gap and method).",
            "- PSNR: mean over the in-between frames of per-frame PSNR (data range 255, capped at 100 dB). "
            "SSIM: mean per-frame SSIM (Gaussian 11x11 window, sigma 1.5).",
            "- Position error (synthetic videos with their JSON only): distance in px between each visible "
            "object's true centroid and the centroid of the largest blob of its colour; a visible object not "
            "found counts as a miss (scored as a random guess) and the miss rate is its share.",
            "- Warping error: mean |frame_t - warp(frame_t+1)| over flow-consistent pixels, flow from the "
            "ground truth, [0, 1] units.",
            "- With S > 1 samples: model rows average over the samples; `model best/S` picks per clip the sample "
            "with the highest PSNR (an oracle, an upper bound); diversity is the mean absolute pixel difference "
            "between two samples over all sample pairs, in [0, 1] units.",
            ""]
    return "\n".join(out)


def interpolation_figure(report: dict, examples: list[dict]) -> bytes:
    """report.png: metric vs gap per method with 95% error bars, then example strips (inputs,
    ground truth, each method) at the largest gap, side by side."""
    from vidm.strip import make_strip

    plt = require_matplotlib()
    summary, gaps = report["summary"], report["gaps"]
    metrics = _present_metrics(summary)
    strips = []
    for e in examples:
        gt = e["ground_truth"]  # (G+1, H, W, 3)
        inputs = np.full_like(gt, 160)
        inputs[0], inputs[-1] = gt[0], gt[-1]
        rows, labels = [inputs, gt], ["inputs", "ground truth"]
        for m, mids in e["methods"].items():
            rows.append(np.concatenate([gt[:1], mids, gt[-1:]]))
            labels.append(_label(m))
        strips.append((make_strip(rows, scale=strip_scale(gt.shape[1])), labels, e))
    label_in = 1.3  # room for the row labels, inches
    top_w = 3.4 * max(1, len(metrics))
    widths = [img.shape[1] / 100 + label_in for img, _, _ in strips]
    side_by_side = sum(widths) <= max(top_w, 16.0)  # else one example under the other
    width = max(top_w, sum(widths) if side_by_side else max(widths, default=0), 6.0)
    heights = [img.shape[0] / 100 + 0.5 for img, _, _ in strips]
    strip_h = (max(heights, default=0) if side_by_side else sum(heights))
    fig = plt.figure(figsize=(width, 3.6 + strip_h), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.6, strip_h]) if strips else (fig, None)
    axes = np.atleast_1d(top.subplots(1, max(1, len(metrics))))
    colours = {_label(m): f"C{i}" for i, m in enumerate(summary)}  # one colour per method in every panel
    for ax, k in zip(axes, metrics):
        series = {_label(m): [summary[m][str(g)].get(k) for g in gaps] for m in summary
                  if any(k in summary[m][str(g)] for g in gaps)}
        errorbar_panel(ax, gaps, series, k, colours)
    handles, names = axes[0].get_legend_handles_labels()
    top.legend(handles, names, loc="outside right upper", fontsize=8)
    n = len(report["clips"])
    top.suptitle(f"vidm eval interpolate: {n} clips; mean and {INTERVAL.split(':')[0]}", fontsize=11)
    if strips:
        if side_by_side:
            axes = bottom.subplots(1, len(strips), width_ratios=[img.shape[1] for img, _, _ in strips])
        else:
            axes = bottom.subplots(len(strips), 1, height_ratios=[img.shape[0] for img, _, _ in strips])
        axes = np.atleast_1d(axes)
        for ax, (img, labels, e) in zip(axes, strips):
            show_strip(ax, img, labels, f"clip {e['clip']}: {Path(e['video']).name} frames {e['start']}-"
                                        f"{e['start'] + e['gap']} (gap {e['gap']})")
    return figure_png(fig)


# ---------------------------------------------------------------------------------- generation


def generation_markdown(report: dict) -> str:
    """report.md for `vidm eval generate`."""
    groups = ["all", *report["feature_groups"]]
    fvd = report.get("fvd")
    out = ["# vidm eval generate", ""]
    out += _settings_lines(report["settings"])
    out += [f"- **time**: {report['timing']['total_s']:.1f} s", ""]
    out += ["## Fréchet distance to the real clips (lower is better)", "",
            f"Feature space `{report['features']}` (described below); `all` uses every feature, the other "
            f"columns one group each. {report['num_videos']} videos of {report['frames']} frames per set.", ""]
    header = ["set", *[f"FD {g}" for g in groups]] + (["FVD"] if fvd else [])
    rows = [[name, *[fmt(report["frechet"][name][g], 4) for g in groups]] + ([fmt(fvd[name], 2)] if fvd else [])
            for name in report["frechet"]]
    out += [markdown_table(header, rows), ""]
    if not fvd:
        out += ["FVD: not computed (pass `--i3d PATH` with local Kinetics-400 I3D weights).", ""]
    elif report.get("fvd_size") != 224:
        out += [f"FVD computed at {report['fvd_size']}x{report['fvd_size']} I3D input: NOT comparable to "
                "published FVD (224x224).", ""]
    p = report["prediction"]
    out += ["## Continuations: frame accuracy of the predicted frames", "",
            f"Frames {report['context']}..{report['frames'] - 1} of each real clip, given frames "
            f"0..{report['context'] - 1}; mean and {INTERVAL}.", ""]
    rows = [[m, fmt_interval(s["psnr"], 2), fmt_interval(s["ssim"], 3)] for m, s in p["summary"].items()]
    rows += [[f"{cmp} (paired)", fmt_interval(d["psnr"], 2), fmt_interval(d["ssim"], 3)]
             for cmp, d in p["paired"].items()]
    out += [markdown_table(["method", metric_header("psnr"), metric_header("ssim")], rows), ""]
    out += ["## Definitions", "",
            "- Sets: `generated` = unconditional videos; `predicted` = each real clip's first frames given, "
            "the rest predicted by the model; `copy-last` = the given frames, then the last given frame "
            "repeated (no motion).",
            "- stats-v1 features (127-d, frames in [0, 1]): colour = joint RGB histogram, 4 levels per channel "
            "(64); layout = time-averaged frame over a 4x4 grid, RGB (48); texture = mean |grey gradient|, "
            "share of pixels with gradient > 0.1 (2); motion = histogram of |frame difference| in 8 bins, "
            "mean |difference| at lags 1/2/4, std over time of the frame mean (flicker) and of the per-step "
            "difference (jerkiness) (13).",
            "- The Fréchet distance fits a Gaussian to each set's features; with few videos it is biased "
            "upward, so compare numbers only at equal set sizes and lengths.",
            ""]
    return "\n".join(out)


def sample_grid(videos: np.ndarray, label: str, rows: int = 4, max_frames: int = 12,
                labels: bool = True) -> np.ndarray:
    """The first `rows` videos (uint8 (N, T, H, W, 3)) as one image, a row per video."""
    from vidm.strip import make_strip

    vids = list(videos[:rows])
    names = [f"{label} {i}" for i in range(len(vids))] if labels else None
    return make_strip(vids, names, scale=strip_scale(videos.shape[2]), max_frames=max_frames)


def generation_figure(report: dict, videos: dict[str, np.ndarray], rows: int = 4) -> bytes:
    """report.png: Fréchet distance per feature group and set, prediction PSNR, sample grids."""
    plt = require_matplotlib()
    groups = ["all", *report["feature_groups"]]
    sets = list(report["frechet"])
    grids = [(name, sample_grid(videos[name], name, rows, labels=False)) for name in ("real", "generated", "predicted")
             if name in videos]
    width = max(10.0, max(g.shape[1] for _, g in grids) / 100 + 0.5)
    heights = [3.4] + [g.shape[0] / 100 + 0.35 for _, g in grids]
    fig = plt.figure(figsize=(width, sum(heights)), layout="constrained")
    subs = fig.subfigures(len(heights), 1, height_ratios=heights)
    ax, ax2 = subs[0].subplots(1, 2, width_ratios=[2, 1])
    w = 0.8 / len(sets)
    for i, name in enumerate(sets):
        vals = [max(report["frechet"][name][g], 1e-12) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(sets) - 1) / 2) * w, vals, w, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_yscale("log")
    ax.set_title(f"Fréchet distance to real clips ({report['features']}), lower is better", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3, axis="y")
    ax = ax2
    summ = report["prediction"]["summary"]
    names = list(summ)
    mean = np.array([summ[m]["psnr"]["mean"] for m in names], float)
    lo = np.array([summ[m]["psnr"]["lo"] for m in names], float)
    hi = np.array([summ[m]["psnr"]["hi"] for m in names], float)
    err = np.nan_to_num(np.stack([mean - lo, hi - mean]), nan=0.0)
    ax.bar(names, mean, yerr=err, capsize=4, color=["C1", "C2"][: len(names)])
    ax.set_title("continuation PSNR (dB), 95% t-interval", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    T, C = report["frames"], report["context"]
    titles = {"real": "real clips", "generated": "generated (unconditional)",
              "predicted": f"predicted (frames 0-{C - 1} given)", "copy-last": "copy-last reference"}
    for sub, (name, img) in zip(subs[1:], grids):
        ax = sub.subplots()
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{titles.get(name, name)}: {min(rows, len(videos[name]))} videos, {T} frames "
                     f"(at most 12 shown, evenly spaced)", fontsize=9, loc="left")
    fig.suptitle(f"vidm eval generate: {report['num_videos']} videos per set", fontsize=11)
    return figure_png(fig)
