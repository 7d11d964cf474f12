"""Frame-interpolation evaluation: cut held-out clips, run the model and the baselines on
identical inputs, score them (the loop behind `vidm eval interpolate`, callable from Python).

    clips = cut_clips("data/heldout", num=50, length=max(gaps) + 1, seed=0)
    result = evaluate_interpolation(clips, gaps=[2, 4, 8], methods=["model", "model-time-reversal", "flow"],
                                    pipe=pipe, samples=1)
    result.report["summary"]["flow"]["4"]["psnr"]        # {mean, lo, hi, std, n}

Protocol. Clip c is frames s_c .. s_c + G of one video (G = the largest gap). For gap g every
method gets start = frame s_c and end = frame s_c + g and makes the g - 1 frames between; they
are scored against the true frames s_c + 1 .. s_c + g - 1. The same clips and start frames
serve every gap and method, so differences between methods are paired (same inputs).

Per clip and gap (means over the in-between frames):
- psnr: per-frame PSNR (dB, data range 255), capped at 100 dB so an exact frame stays finite.
- ssim: per-frame SSIM (Gaussian window 11x11, sigma 1.5).
- pos_err / miss_rate (synthetic videos with their ground-truth JSON only): the object-position
  error in px and the share of visible objects not found by colour (`vidm.eval.positions`).
- warp_err (`warping=True`): temporal warping error of start, in-betweens, end, with flow taken
  on the ground truth (`vidm.eval.metrics.warping_error`).
The model methods (MODEL_METHODS) are the pipeline with one interpolation strategy each:
"model" (infill), "model-bidirectional" (needs the backward stage), "model-time-reversal", and
"model-cascade" (infill, then the upsampler stage: VIDIM's cascade; compare it with "model" at
the upsampler's frame size, `--size`).
With samples S > 1 (the model methods only; the baselines are deterministic):
- "model" rows average each metric over the S samples (the expected quality of one draw);
- "model_best_of_S" rows (and "model-bidirectional_best_of_S", ...) take, per clip, the sample
  with the highest PSNR (an oracle pick: the upper bound of what a good sample selector could reach);
- diversity: the mean absolute pixel difference between two samples, averaged over all sample
  pairs, frames, pixels and channels, in [0, 1] intensity units (0: every sample identical).
  High diversity where motion is ambiguous is the point of a generative interpolator.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from vidm.errors import ConfigError, NotEnoughFramesError, NoVideosError, ShapeError, VideoError

if TYPE_CHECKING:
    from vidm.pipeline.options import SamplingOptions

PSNR_CAP = 100.0  # dB; identical frames would otherwise give +inf
SSIM_MIN_SIZE = 11  # the SSIM window

# ---------------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One held-out clip: `length` consecutive frames of `video` from frame `start`."""

    index: int
    video: str
    start: int
    frames: np.ndarray  # uint8 (L, H, W, 3)
    meta: dict | None = None  # synthetic ground truth (`vidm data synth` JSON) when present and usable


def parse_gaps(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (sorted, unique); every gap >= 2 (gap 1 has no frame in between)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        gaps = sorted({int(p) for p in parts})
    except ValueError:
        raise ConfigError(f"--gaps {text!r}: expected comma-separated integers such as 2,4,8") from None
    if not gaps:
        raise ConfigError(f"--gaps {text!r}: no gap given (e.g. --gaps 2,4,8)")
    if gaps[0] < 2:
        raise ConfigError(f"--gaps {text!r}: every gap must be >= 2 (a gap of g frames has g-1 frames between)")
    return gaps


def index_videos(data: str | Path, progress: bool = False):
    """Usable videos under `data` (VideoEntry list); clear errors for a missing or empty folder."""
    from vidm.data.index import build_index

    root = Path(data)
    if not root.exists():
        raise VideoError(f"--data {root}: no such folder")
    if not root.is_dir():
        raise VideoError(f"--data {root}: not a folder")
    index = build_index(root, progress=progress)
    if not index.videos:
        extra = f" ({len(index.skipped)} unreadable)" if index.skipped else ""
        raise NoVideosError(f"--data {root}: no usable videos{extra}")
    return index


def choose_clips(videos, num: int, length: int, seed: int) -> list[tuple[object, int]]:
    """Pick `num` distinct (video, start) pairs, uniformly over all clip positions where
    `length` frames fit, with a seeded generator: the same folder and seed give the same clips.
    Fewer come back when the folder holds fewer distinct positions."""
    eligible = [v for v in videos if v.num_frames >= length]
    if not eligible:
        longest = max(v.num_frames for v in videos)
        raise NotEnoughFramesError(
            f"no video is long enough: a clip needs {length} frames, the longest video has {longest}")
    counts = np.array([v.num_frames - length + 1 for v in eligible], dtype=np.int64)  # starts per video
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    flat = rng.permutation(total) if num >= total else rng.choice(total, size=num, replace=False)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    vid = np.searchsorted(offsets, flat, side="right") - 1
    return [(eligible[v], int(f - offsets[v])) for v, f in zip(vid, flat)]


def _synth_meta(video: str, height: int, width: int) -> dict | None:
    """The synthetic ground truth next to `video`, when there is one at the frames' resolution."""
    from vidm.eval.positions import load_synth_meta

    path = Path(video).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        meta = load_synth_meta(path)
    except VideoError:
        return None  # some other JSON: no ground truth
    return meta if (meta.get("height"), meta.get("width")) == (height, width) else None


def cut_clips(data: str | Path, num: int, length: int, seed: int = 0, size=None,
              progress: bool = False) -> list[Clip]:
    """`num` held-out clips of `length` frames from the videos under `data` (see `choose_clips`).
    size: None keeps the native resolution (needed for the synthetic position metric); an int
    resizes (short side) and centre-crops to a square, as `vidm.video.read_clip`."""
    from tqdm.auto import tqdm

    from vidm.video import read_clip

    if num < 1:
        raise ConfigError(f"--clips must be >= 1, got {num}")
    index = index_videos(data, progress)
    picks = choose_clips(index.videos, num, length, seed)
    clips = []
    for i, (entry, start) in enumerate(tqdm(picks, desc="reading clips", unit="clip", leave=False,
                                            disable=not progress)):
        frames = read_clip(entry.path, start=start, num_frames=length, size=size)
        if min(frames.shape[1:3]) < SSIM_MIN_SIZE:
            raise ShapeError(f"{entry.path}: frames are {frames.shape[2]}x{frames.shape[1]}; "
                             f"SSIM needs at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE}")
        clips.append(Clip(i, entry.path, start, frames, _synth_meta(entry.path, *frames.shape[1:3])))
    return clips


# ---------------------------------------------------------------------------------- the model


def interpolate_batch(pipe, starts: np.ndarray, ends: np.ndarray, num_frames: int, samples: int = 1,
                      seed: int = 0, steps=None, sampler=None, guidance=None, strategy: str = "infill",
                      reinject: int = 0) -> np.ndarray:
    """B pairs in one sampler run: `VideoPipeline.interpolate_batch`, uint8 (B, samples, num_frames, H, W, 3)."""
    return pipe.interpolate_batch(starts, ends, num_frames, samples=samples, seed=seed, steps=steps,
                                  sampler=sampler, guidance=guidance, strategy=strategy, reinject=reinject)


def effective_settings(pipe, steps=None, sampler=None, guidance=None, *,
                       options: SamplingOptions | None = None) -> dict:
    """The sampling settings a pipeline call will really use (its config fills the blanks)."""
    from vidm.pipeline.options import SamplingOptions

    opts = (options or SamplingOptions()).replace(steps=steps, sampler=sampler, guidance=guidance)
    return {**opts.resolve(pipe.config).settings(), "infill_init": pipe.config.infill_init,
            "infill_sigma": pipe.config.infill_sigma}


# ---------------------------------------------------------------------------------- metrics


def frame_metrics(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean PSNR (capped) and mean SSIM of uint8 (n, H, W, 3) frames against the truth."""
    from vidm.eval.metrics import psnr, ssim

    p = psnr(pred, truth).clamp(max=PSNR_CAP)  # (n,)
    s = ssim(pred, truth)
    return float(p.mean()), float(s.mean())


def clip_metrics(pred: np.ndarray, clip: Clip, gap: int, warping: bool) -> dict[str, float]:
    """All metrics of one method's in-betweens `pred` uint8 (g-1, H, W, 3) for `clip` at `gap`."""
    from vidm.eval.metrics import warping_error
    from vidm.eval.positions import object_position_error

    truth = clip.frames[1:gap]
    m = dict(zip(("psnr", "ssim"), frame_metrics(pred, truth)))
    if clip.meta is not None:
        pe = object_position_error(pred, clip.meta, frame_indices=np.arange(clip.start + 1, clip.start + gap))
        m["pos_err"], m["miss_rate"] = pe.mean, pe.miss_rate
    if warping:
        video = np.concatenate([clip.frames[:1], pred, clip.frames[gap:gap + 1]])  # (g+1, H, W, 3)
        w = warping_error(video, reference=clip.frames[:gap + 1]).numpy()
        m["warp_err"] = float(np.nanmean(w)) if np.isfinite(w).any() else math.nan
    return m


def diversity(samples: np.ndarray) -> float:
    """Mean pairwise |x_i - x_j| / 255 over samples uint8 (S, n, H, W, 3), S >= 2."""
    x = samples.astype(np.float32) / 255.0
    pairs = list(itertools.combinations(range(len(x)), 2))
    return float(np.mean([np.abs(x[i] - x[j]).mean() for i, j in pairs]))


def _mean_dicts(ds: list[dict]) -> dict:
    keys = ds[0].keys()
    out = {}
    for k in keys:
        v = np.array([d[k] for d in ds], float)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return out


# ---------------------------------------------------------------------------------- the methods


class MethodRunner(Protocol):
    """One interpolation method, run on a batch of B pairs of one frame size."""

    name: str
    samples: int  # outputs per pair; > 1 (a sampling method) adds best-of rows and diversity

    def __call__(self, starts: np.ndarray, ends: np.ndarray, num_frames: int, seed: int,
                 truth: np.ndarray) -> np.ndarray:
        """starts, ends uint8 (B, H, W, 3), the true in-betweens truth (B, num_frames, H, W, 3),
        the batch's seed -> uint8 (B, samples, num_frames, H, W, 3)."""


@dataclass(frozen=True)
class ModelMethod:
    """How a model method calls the pipeline: its interpolation strategy, with or without the cascade."""

    strategy: str = "infill"
    cascade: bool = False

    def check(self, pipe) -> None:
        """A one-line ConfigError when `pipe` cannot run it (no backward / upsampler stage)."""
        pipe.check_strategy(self.strategy)
        pipe.check_cascade(self.cascade)


# The model methods: the full pipeline with one interpolation strategy each (vidm.pipeline.options),
# and the VIDIM cascade (infill, then the upsampler).
MODEL_METHODS = {"model": ModelMethod(), "model-bidirectional": ModelMethod("bidirectional"),
                 "model-time-reversal": ModelMethod("time-reversal"), "model-cascade": ModelMethod(cascade=True)}


@dataclass
class ModelRunner:
    """The full pipeline (`VideoPipeline.interpolate_batch`) with these sampling options, this
    model method (strategy, cascade) and `reinject` noise re-injections per early solver step."""

    pipe: object
    options: SamplingOptions
    name: str = "model"
    method: ModelMethod = ModelMethod()
    reinject: int = 0

    @property
    def samples(self) -> int:
        return self.options.samples

    def __call__(self, starts, ends, num_frames, seed, truth):
        return self.pipe.interpolate_batch(starts, ends, num_frames, options=self.options.replace(seed=seed),
                                           strategy=self.method.strategy, reinject=self.reinject,
                                           cascade=self.method.cascade)


@dataclass
class FixedRunner:
    """A deterministic method: fn(starts, ends, num_frames, truth) -> (B, 1, num_frames, H, W, 3)."""

    name: str
    fn: Callable
    samples: int = 1

    def __call__(self, starts, ends, num_frames, seed, truth):
        return self.fn(starts, ends, num_frames, truth)


def _per_pair(baseline: Callable) -> Callable:
    """A baseline fn(start, end, n) -> (n, H, W, 3) over a batch -> (B, 1, n, H, W, 3)."""
    return lambda starts, ends, n, truth: np.stack([baseline(s, e, n)[None] for s, e in zip(starts, ends)])


# Methods that run the pipeline's pieces without (all of) the diffusion: what each adds.
# fn(pipe, starts, ends, num_frames, truth) -> (B, 1, num_frames, H, W, 3).
PIPELINE_METHODS = {
    # the solver's splat start, decoded with no diffusion step
    "splat": lambda pipe, s, e, n, truth: pipe.splat_batch(s, e, n),
    # the true in-betweens' own latents decoded (with the end frames as references, if taken)
    "oracle": lambda pipe, s, e, n, truth: pipe.oracle_batch(s, e, truth),
    # the reference decoder from the end frames alone, the latent unknown
    "refs": lambda pipe, s, e, n, truth: pipe.references_only_batch(s, e, n),
}


def make_runner(name: str, pipe, options: SamplingOptions, reinject: int = 0) -> MethodRunner:
    """The runner of a MODEL_METHODS name (a ConfigError if `pipe` cannot run it), a
    PIPELINE_METHODS name or a baseline name (`vidm.eval.baselines`)."""
    from vidm.eval.baselines import get_baseline

    if name in MODEL_METHODS:
        if pipe is None:
            raise ConfigError(f"method {name!r} needs a pipeline")
        MODEL_METHODS[name].check(pipe)
        return ModelRunner(pipe, options, name, MODEL_METHODS[name], reinject)
    if name in PIPELINE_METHODS:
        if pipe is None:
            raise ConfigError(f"method {name!r} needs a pipeline (its autoencoder)")
        return FixedRunner(name, functools.partial(PIPELINE_METHODS[name], pipe))
    return FixedRunner(name, _per_pair(get_baseline(name)))


# ---------------------------------------------------------------------------------- the loop


@dataclass
class InterpolationResult:
    report: dict  # JSON-ready (after report.json_safe): clips, per_clip, summary, paired, timing
    examples: list[dict] = field(default_factory=list)  # arrays for the figure (largest gap)


def evaluate_interpolation(clips: Sequence[Clip], gaps: Sequence[int], methods: Sequence[str], pipe=None,
                           samples: int | None = None, seed: int | None = None, steps=None, sampler=None,
                           guidance=None, batch_size: int = 8, warping: bool = False, examples: int = 2,
                           progress: bool = False, *, options: SamplingOptions | None = None,
                           reinject: int = 0) -> InterpolationResult:
    """Run every method on every clip at every gap and score it (see the module docstring).

    methods: the model methods of MODEL_METHODS ("model" = infill, "model-bidirectional",
    "model-time-reversal"; each needs `pipe`, all sampled with `reinject` re-injections), the
    pipeline pieces of PIPELINE_METHODS ("splat": the splat start with no diffusion step, what
    the motion model adds to it; "oracle": the true frames' latents decoded, the decoder's share
    of the error; "refs": the reference decoder from the end frames alone; each needs `pipe`)
    and/or baseline names (`vidm.eval.baselines.BASELINES`). The model samples with `options`
    (or the keywords; samples default 1, seed 0) and sees clips in batches of `batch_size`;
    batch k (first clip i) uses seed + i. Returns the report (per-clip numbers, summaries with
    95% t-intervals, paired differences of the first model method minus every other method,
    timing) and, for the largest gap, the frames of the first `examples` clips.
    """
    from tqdm.auto import tqdm

    from vidm.pipeline.options import SamplingOptions

    opts = (options or SamplingOptions()).replace(samples=samples, seed=seed, steps=steps, sampler=sampler,
                                                  guidance=guidance)
    gaps = sorted(int(g) for g in gaps)
    _check_inputs(clips, gaps[-1], methods, pipe, opts.samples, batch_size)
    runners = [make_runner(m, pipe, opts, reinject) for m in methods]
    run = _Scoring(clips, _size_batches(clips, batch_size), opts.seed, warping,
                   {i: _example(i, clips[i], gaps[-1]) for i in range(min(examples, len(clips)))})
    per_clip: dict[str, dict[str, dict[str, list]]] = {}
    timing = {r.name: 0.0 for r in runners}
    with tqdm(total=len(gaps) * len(runners) * len(clips), desc="eval interpolate", unit="clip",
              disable=not progress) as run.bar:
        for g in gaps:
            for r in runners:
                rows, best_rows, timing[r.name] = run.score(r, g, gaps[-1], timing[r.name])
                per_clip.setdefault(r.name, {})[str(g)] = _columns(rows)
                if best_rows is not None:
                    per_clip.setdefault(_best_name(r), {})[str(g)] = _columns(best_rows)
    return _result(clips, gaps, runners, per_clip, timing, list(run.examples.values()))


def _check_inputs(clips, G: int, methods, pipe, samples: int, batch_size: int) -> None:
    """ConfigError / NotEnoughFramesError for input no method can run on."""
    if not clips:
        raise ConfigError("no clips to evaluate")
    short = [c for c in clips if len(c.frames) < G + 1]
    if short:
        raise NotEnoughFramesError(f"{short[0].video}: clip of {len(short[0].frames)} frames is shorter than "
                                   f"the largest gap {G} needs ({G + 1})")
    needs = [m for m in methods if m in MODEL_METHODS]
    if needs and pipe is None:
        raise ConfigError(f"method {needs[0]!r} needs a pipeline")
    if samples < 1 or batch_size < 1:
        raise ConfigError(f"samples and batch size must be >= 1, got {samples} and {batch_size}")


def _size_batches(clips, batch_size: int) -> list[list[int]]:
    """Clip indices in batches of one frame size each (the model needs one size per batch)."""
    order = sorted(range(len(clips)), key=lambda i: (clips[i].frames.shape[1:3], i))
    batches = []
    for _, grp in itertools.groupby(order, key=lambda i: clips[i].frames.shape[1:3]):
        grp = list(grp)
        batches += [grp[k:k + batch_size] for k in range(0, len(grp), batch_size)]
    return batches


def _example(i: int, clip: Clip, G: int) -> dict:
    return {"clip": i, "video": clip.video, "start": clip.start, "gap": G,
            "ground_truth": clip.frames[:G + 1], "methods": {}}


def _best_name(runner: MethodRunner) -> str:
    return f"{runner.name}_best_of_{runner.samples}"


@dataclass
class _Scoring:
    """What scoring one method at one gap needs besides the method: the clips, their batches,
    the base seed, the warping switch, the example slots (clip index -> example) and the bar."""

    clips: Sequence[Clip]
    batches: list[list[int]]
    seed: int
    warping: bool
    examples: dict[int, dict]
    bar: object = None

    def score(self, runner: MethodRunner, g: int, G: int, seconds: float):
        """Every clip at gap g: (rows, best-of rows or None, seconds + the method's run time).
        A row is the mean over the method's samples; a sampling method adds its diversity and
        the best-PSNR sample's row."""
        clips, S = self.clips, runner.samples
        rows: list[dict | None] = [None] * len(clips)
        best_rows: list[dict | None] = [None] * len(clips)
        for batch in self.batches:
            starts = np.stack([clips[i].frames[0] for i in batch])  # (B, H, W, 3)
            ends = np.stack([clips[i].frames[g] for i in batch])
            truth = np.stack([clips[i].frames[1:g] for i in batch])  # (B, g-1, H, W, 3)
            t0 = time.perf_counter()
            outs = runner(starts, ends, g - 1, self.seed + batch[0], truth)  # (B, S, g-1, H, W, 3)
            seconds += time.perf_counter() - t0
            for i, out in zip(batch, outs):
                ms = [clip_metrics(o, clips[i], g, self.warping) for o in out]  # one per sample
                rows[i] = _mean_dicts(ms)
                best = int(np.argmax([d["psnr"] for d in ms])) if S > 1 else 0
                if S > 1:
                    best_rows[i] = ms[best]
                    rows[i]["diversity"] = diversity(out)
                if g == G and i in self.examples:
                    self.examples[i]["methods"][runner.name] = out[0]
                    if S > 1:
                        self.examples[i]["methods"][_best_name(runner)] = out[best]
                self.bar.update(1)
        return rows, (best_rows if S > 1 else None), seconds


def _result(clips, gaps, runners, per_clip, timing, examples) -> InterpolationResult:
    """The report (rows: the model methods in MODEL_METHODS order, each with its best-of row, then
    the others; paired differences of the first model method minus every other method) and the
    figure's examples."""
    from vidm.eval.report import METRIC_BOUNDS, paired_difference, t_interval

    order = list(MODEL_METHODS)
    ranked = sorted(runners, key=lambda r: order.index(r.name) if r.name in MODEL_METHODS else len(order))
    names = [n for r in ranked for n in [r.name] + ([_best_name(r)] if r.samples > 1 else [])]
    per_clip = {n: per_clip[n] for n in names}
    summary = {n: {gk: {k: t_interval(v, bounds=METRIC_BOUNDS.get(k)) for k, v in cols.items()}
                   for gk, cols in per_clip[n].items()} for n in names}
    ref = ranked[0].name if ranked[0].name in MODEL_METHODS else None
    model = per_clip.get(ref)
    paired = {f"{ref} - {b}": {str(g): {k: paired_difference(model[str(g)][k], per_clip[b][str(g)][k])
                                        for k in per_clip[b][str(g)] if k in model[str(g)]} for g in gaps}
              for b in (r.name for r in ranked[1:])} if model is not None else {}
    report = {
        "clips": [{"video": c.video, "start": c.start, "frames": len(c.frames), "height": c.frames.shape[1],
                   "width": c.frames.shape[2], "ground_truth_json": c.meta is not None} for c in clips],
        "methods": names,
        "gaps": gaps,
        "samples": max(r.samples for r in runners),
        "position_metric": any(c.meta is not None for c in clips),
        "per_clip": per_clip,
        "summary": summary,
        "paired": paired,
        "timing": {"methods": {m: {"total_s": t, "per_clip_per_gap_s": t / (len(clips) * len(gaps))}
                               for m, t in timing.items()}},
    }
    for e in examples:  # the figure's rows in the report's method order
        e["methods"] = {n: e["methods"][n] for n in names if n in e["methods"]}
    return InterpolationResult(report, examples)


def _columns(rows: list[dict]) -> dict[str, list[float]]:
    """Per-clip dicts -> metric -> per-clip list (NaN where a clip lacks the metric)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k, math.nan) for r in rows] for k in keys}
