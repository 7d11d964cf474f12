"""Generation evaluation: unconditional videos and predicted continuations against real clips
(the loop behind `vidm eval generate`, callable from Python).

Sets compared with the real clips (N clips of T frames at the model's size):
- generated: N unconditional videos (`VideoPipeline.generate`);
- predicted: each real clip's first C frames given, the other T - C predicted (`predict`);
- copy-last: each real clip's first C frames, then frame C-1 repeated (no motion): the
  reference a predictor has to beat.

Feature space "stats-v1" (the Fréchet distance needs no downloaded network): a fixed,
hand-made 127-d description of a whole video, on frames in [0, 1], grey = BT.601 luma,
in four groups (also reported one by one, so a bad number says what is off):
- colour (64): joint RGB histogram, 4 levels per channel, share of all pixels of all frames;
- layout (48): the time-averaged frame averaged over a 4x4 grid of cells, RGB;
- texture (2): mean absolute grey gradient (|dx| + |dy|) / 2; share of pixels with a gradient
  above 0.1 (edges);
- motion (13): histogram of |grey_t+1 - grey_t| over the bins [0, .01, .02, .05, .1, .2, .35,
  .5, 1] (8); mean |grey_t+L - grey_t| for lags L = 1, 2, 4 (3; the largest lag that fits when
  T <= L); std over time of the frame mean (flicker); std over time of the per-step mean
  |difference| (jerkiness).
On synthetic data (`colour_tracks=True`) the report also gets the colour-centroid track length
of the generated and the real videos (`vidm.eval.colour_tracks`): how long objects keep their
colour near their last position, a consistency check that needs no ground truth.
Fréchet distances over few videos are biased upward (covariances from N samples in up to 127
dimensions); compare numbers only at equal N and T. FVD (I3D logits, `vidm.eval.fvd`) is added
when the user gives local I3D weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vidm.errors import ConfigError, ShapeError

FEATURES = "stats-v1"
FEATURE_GROUPS = {"colour": slice(0, 64), "layout": slice(64, 112), "texture": slice(112, 114),
                  "motion": slice(114, 127)}
FEATURE_DIM = 127
_DIFF_BINS = np.array([0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0 + 1e-6])
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _grid_means(x: np.ndarray, cells: int = 4) -> np.ndarray:
    """(H, W, C) -> (cells, cells, C) means over a grid of (near-)equal cells."""
    rows = np.array_split(np.arange(x.shape[0]), cells)
    cols = np.array_split(np.arange(x.shape[1]), cells)
    return np.array([[x[r][:, c].mean((0, 1)) for c in cols] for r in rows])


def video_features(videos: np.ndarray) -> np.ndarray:
    """stats-v1 features (module docstring) of uint8 videos (N, T, H, W, 3) -> float64 (N, 127)."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8 or videos.shape[1] < 2:
        raise ShapeError(f"video_features: expected uint8 (N, T>=2, H, W, 3), got {videos.dtype} {videos.shape}")
    out = np.empty((len(videos), FEATURE_DIM))
    for n, v in enumerate(videos):
        x = v.astype(np.float32) / 255.0  # (T, H, W, 3)
        q = np.minimum((x * 4).astype(np.int64), 3)
        colour = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64) / q[..., 0].size
        layout = _grid_means(x.mean(0)).ravel()
        grey = x @ _LUMA  # (T, H, W)
        gx, gy = np.abs(np.diff(grey, axis=2)), np.abs(np.diff(grey, axis=1))
        texture = [(gx.mean() + gy.mean()) / 2, ((gx > 0.1).mean() + (gy > 0.1).mean()) / 2]
        d = np.abs(np.diff(grey, axis=0))  # (T-1, H, W)
        hist = np.histogram(d, bins=_DIFF_BINS)[0] / d.size
        T = len(grey)
        lags = [np.abs(grey[min(L, T - 1):] - grey[:T - min(L, T - 1)]).mean() for L in (1, 2, 4)]
        motion = [*hist, *lags, grey.mean((1, 2)).std(), d.mean((1, 2)).std()]
        out[n] = np.concatenate([colour, layout, texture, motion])
    return out


def frechet_by_group(real_features: np.ndarray, fake_features: np.ndarray) -> dict[str, float]:
    """Fréchet distance over all 127 features ("all") and over each feature group."""
    from vidm.eval.metrics import frechet_distance_from_features

    out = {"all": frechet_distance_from_features(real_features, fake_features)}
    for name, sl in FEATURE_GROUPS.items():
        out[name] = frechet_distance_from_features(real_features[:, sl], fake_features[:, sl])
    return out


# ---------------------------------------------------------------------------------- the model


def predict_batch(pipe, given: np.ndarray, num_future: int, seed: int = 0, steps=None, sampler=None,
                  guidance=None) -> np.ndarray:
    """B clips in one sampler run: given uint8 (B, C, H, W, 3), the known first frames ->
    uint8 (B, num_future, H, W, 3) (`VideoPipeline.predict_batch`, one sample each)."""
    return pipe.predict_batch(given, num_future, seed=seed, steps=steps, sampler=sampler, guidance=guidance)[:, 0]


# ---------------------------------------------------------------------------------- the loop


@dataclass
class GenerationResult:
    report: dict  # JSON-ready (after report.json_safe)
    videos: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> uint8 (N, T, H, W, 3)


def evaluate_generation(pipe, real: np.ndarray, context: int = 4, seed: int = 0, steps=None, sampler=None,
                        guidance=None, batch_size: int = 8, i3d=None, i3d_size: int = 224,
                        progress: bool = False, colour_tracks: bool = False) -> GenerationResult:
    """Generate len(real) videos and predict every real clip's continuation; compare all with
    the real clips (module docstring). real: uint8 (N, T, S, S, 3) at the model's size S.
    Batch k (first video i) uses seed + i. i3d: an `InceptionI3d` for FVD (None: no FVD);
    i3d_size is the I3D input size (224 = FVD proper; smaller only for code-path tests).
    colour_tracks: add report["colour_tracks"] (only meaningful on synthetic data; else None)."""
    from tqdm.auto import tqdm

    from vidm.eval.interpolate_eval import frame_metrics
    from vidm.eval.report import METRIC_BOUNDS, paired_difference, t_interval

    real = np.asarray(real)
    if real.ndim != 5 or real.dtype != np.uint8:
        raise ShapeError(f"evaluate_generation: real clips must be uint8 (N, T, H, W, 3), got {real.shape}")
    N, T = real.shape[:2]
    S = pipe.config.size
    if real.shape[2:4] != (S, S):
        raise ShapeError(f"real clips are {real.shape[3]}x{real.shape[2]}, the model makes {S}x{S}")
    if N < 2:
        raise ConfigError(f"a Fréchet distance needs at least 2 videos per set, got {N}")
    if not 1 <= context < T:
        raise ConfigError(f"--context must be in [1, frames - 1] = [1, {T - 1}], got {context}")
    batch_size = max(1, int(batch_size))
    chunks = [list(range(i, min(i + batch_size, N))) for i in range(0, N, batch_size)]
    bar = tqdm(total=2 * N, desc="eval generate", unit="video", disable=not progress)
    timing = {}
    try:
        t0 = time.perf_counter()
        gen = []
        for c in chunks:
            gen.append(pipe.generate(num_frames=T, num_videos=len(c), seed=seed + c[0], steps=steps, sampler=sampler,
                                     guidance=guidance))
            bar.update(len(c))
        generated = np.concatenate(gen)
        timing["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fut = []
        for c in chunks:
            fut.append(predict_batch(pipe, real[c, :context], T - context, seed=seed + c[0], steps=steps,
                                     sampler=sampler, guidance=guidance))
            bar.update(len(c))
        predicted = np.concatenate([real[:, :context], np.concatenate(fut)], axis=1)
        timing["predict_s"] = time.perf_counter() - t0
    finally:
        bar.close()
    static = np.concatenate([real[:, :context], np.repeat(real[:, context - 1:context], T - context, 1)], axis=1)
    sets = {"generated": generated, "predicted": predicted, "copy-last": static}

    t0 = time.perf_counter()
    f_real = video_features(real)
    frechet = {name: frechet_by_group(f_real, video_features(v)) for name, v in sets.items()}
    fvd_scores = None
    if i3d is not None:
        from vidm.eval.fvd import fvd

        fvd_scores = {name: fvd(i3d, real, v, size=i3d_size) for name, v in sets.items()}
    tracks = None
    if colour_tracks:
        from vidm.eval.colour_tracks import summarise

        tracks = {"generated": summarise(generated), "real": summarise(real)}
    timing["metrics_s"] = time.perf_counter() - t0

    # Frame accuracy of the continuations (a single sample each, so it rewards blur too: read
    # it next to the Fréchet distances).
    per_clip = {}
    for name, vids in (("model", predicted), ("copy-last", static)):
        scores = [frame_metrics(v[context:], r[context:]) for v, r in zip(vids, real)]
        per_clip[name] = {"psnr": [s[0] for s in scores], "ssim": [s[1] for s in scores]}
    prediction = {
        "per_clip": per_clip,
        "summary": {m: {k: t_interval(v, bounds=METRIC_BOUNDS[k]) for k, v in cols.items()}
                    for m, cols in per_clip.items()},
        "paired": {"model - copy-last": {k: paired_difference(per_clip["model"][k], per_clip["copy-last"][k])
                                         for k in ("psnr", "ssim")}},
    }
    report = {
        "features": FEATURES,
        "feature_groups": {k: [v.start, v.stop] for k, v in FEATURE_GROUPS.items()},
        "num_videos": N,
        "frames": T,
        "context": context,
        "frechet": frechet,
        "fvd": fvd_scores,
        "fvd_size": i3d_size if i3d is not None else None,
        "prediction": prediction,
        "colour_tracks": tracks,
        "timing": timing,
    }
    return GenerationResult(report, {"real": real, **sets})
