"""Synthetic videos with ground truth: coloured shapes over panning textured backgrounds.

Each video has 2-5 objects (disc, square, triangle, sprite), each a flat colour from
`PALETTE` (no colour twice in one video, so an object can be found by its colour), at its own
depth (0 = nearest; nearer objects cover farther ones). Motions are the ones that defeat
classical frame interpolation:

- "bounce":  fast straight lines (up to ~0.15 frame widths per frame) reflected off the walls;
- "gravity": ballistic arcs that bounce off the floor and the side walls;
- "cross":   a straight path that enters the frame from outside and leaves it again;
plus rotation (squares, triangles, sprites spin), occlusion where paths cross, and a slowly
panning background (smooth noise, soft stripes or a soft checkerboard in low-saturation
tones, so the saturated object colours stay unique).

Rendering is numpy: anti-aliased coverage per object (soft edges from a signed distance, or
4x4 supersampling for sprites) and front-to-back compositing, which also yields how much of
each object is visible.

Next to every `NNNNN.mp4` goes `NNNNN.json` (see `render_video` for the fields). A video
depends only on (seed, index), never on the worker count.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

import numpy as np

from vidm.errors import ConfigError

# Saturated, 60 degrees apart in hue and > 160 apart in RGB (so no pixel is within the
# default colour_centroid tolerance of two of them); backgrounds stay near grey.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "yellow": (235, 220, 25),
    "green": (30, 200, 45),
    "cyan": (25, 210, 225),
    "blue": (40, 50, 235),
    "magenta": (225, 35, 215),
}
SHAPES = ("disc", "square", "triangle", "sprite")
MOTIONS = ("bounce", "gravity", "cross")
BACKGROUNDS = ("noise", "stripes", "checker")
COORDINATES = ("pixels; origin at the top-left corner of the frame, x to the right, y down; "
               "pixel (row r, column c) covers x in [c, c+1), y in [r, r+1), so its centre is "
               "(c + 0.5, r + 0.5); x, y are the centre of each shape's area (its centroid); "
               "size is the shape's radius (half extent) in pixels; angle in degrees")
SUPERSAMPLE = 4
VISIBLE_MIN = 0.05  # `visible` means at least this share of the object's area shows


# ----------------------------------------------------------------------------- shapes


def _sprite_pattern(rng: np.random.Generator) -> np.ndarray:
    """A left-right symmetric 5x5 pixel-art mask (space-invader style), >= 11 cells."""
    while True:
        half = rng.random((5, 3)) < 0.55
        half[:, 2] |= rng.random(5) < 0.5
        half[1:4, 2] = True  # a solid spine keeps it in one piece
        pattern = np.concatenate([half, half[:, 1::-1]], axis=1)  # (5, 5)
        if pattern.sum() >= 11:
            return pattern


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (px, negative inside) to a disc, square or triangle in the object's
    own (rotated, centred) coordinates."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) - r
    if shape == "square":
        h = 0.8 * r  # half side: area close to the disc's
        qx, qy = np.abs(u) - h, np.abs(v) - h
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    # Equilateral triangle, circumradius r, centroid at the origin: the largest distance
    # past its three edges (edge normals point away from the vertices at -90, 30, 150 deg;
    # each edge lies at the inradius r / 2). Exact inside; slightly rounds the corners.
    d = None
    for a in (90.0, 210.0, 330.0):
        t = math.radians(a)
        e = u * math.cos(t) + v * math.sin(t) - 0.5 * r
        d = e if d is None else np.maximum(d, e)
    return d


def _sprite_inside(u: np.ndarray, v: np.ndarray, r: float, sprite) -> np.ndarray:
    pattern, shift = sprite  # (5, 5) bool, vertical offset putting the area centroid at 0
    cell = 2 * r / 5
    i = np.floor((v + shift + r) / cell).astype(np.int64)
    j = np.floor((u + r) / cell).astype(np.int64)
    ok = (i >= 0) & (i < 5) & (j >= 0) & (j < 5)
    return ok & pattern[np.clip(i, 0, 4), np.clip(j, 0, 4)]


def _object_alpha(shape, cx, cy, r, angle, sprite):
    """Anti-aliased coverage of one object over its bounding box.
    Returns (alpha (h, w) float32, top, left) in frame pixel coordinates (unclipped).

    Discs, squares and triangles get soft edges from their signed distance at pixel centres
    (coverage = clip(0.5 - distance, 0, 1)); sprites, whose blocky outline has no cheap
    distance, are supersampled 4x4."""
    # Bounding radius: the square's corner is at 1.13 r; the sprite's, shifted to put its
    # area centroid at the centre, within 1.9 r.
    ext = (1.9 if shape == "sprite" else 1.2) * r + 1
    left, top = int(math.floor(cx - ext)), int(math.floor(cy - ext))
    w = int(math.ceil(cx + ext)) - left
    h = int(math.ceil(cy + ext)) - top
    s = SUPERSAMPLE if shape == "sprite" else 1
    offs = (np.arange(s) + 0.5) / s
    xs = (left + np.arange(w)[:, None] + offs[None, :]).reshape(-1) - cx  # (w * s,)
    ys = (top + np.arange(h)[:, None] + offs[None, :]).reshape(-1) - cy  # (h * s,)
    c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    X, Y = xs[None, :], ys[:, None]
    u, v = c * X + sn * Y, -sn * X + c * Y  # rotate the sample points by -angle
    if shape != "sprite":
        return np.clip(0.5 - _signed_distance(shape, u, v, r), 0, 1).astype(np.float32), top, left
    inside = _sprite_inside(u, v, r, sprite)  # (h * s, w * s)
    alpha = inside.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)
    return alpha, top, left


# ----------------------------------------------------------------------------- motion


def _simulate(motion: str, rng: np.random.Generator, T: int, S: int, r: float):
    """Centre positions (T, 2) as (x, y) for one object."""
    xy = np.zeros((T, 2))
    if motion == "cross":
        # From just outside one edge through a point inside to just outside another.
        side = rng.integers(4)
        a = rng.uniform(0.15, 0.85) * S
        out = -r - 1.0
        p0 = [(out, a), (S - out, a), (a, out), (a, S - out)][side]
        target = rng.uniform(0.3, 0.7, 2) * S
        d = target - np.array(p0)
        d /= np.linalg.norm(d)
        length = (S + 2 * r + 2) / max(abs(d[0]), abs(d[1]))  # to the far side, outside
        dur = rng.uniform(0.45, 0.85) * T
        t0 = rng.uniform(-0.15, 0.15) * T
        t = np.arange(T)
        xy = np.array(p0) + ((t - t0) * length / dur)[:, None] * d
        return xy
    lo, hi = r, S - r
    x, y = rng.uniform(lo, hi), rng.uniform(lo, hi)
    ang = rng.uniform(0, 2 * math.pi)
    if motion == "bounce":
        speed = rng.uniform(0.04, 0.15) * S
        vx, vy, g, restitution = speed * math.cos(ang), speed * math.sin(ang), 0.0, 1.0
    else:  # gravity
        vx = rng.uniform(0.02, 0.08) * S * rng.choice([-1, 1])
        vy = -rng.uniform(0.0, 0.08) * S
        g, restitution = rng.uniform(0.012, 0.03) * S, rng.uniform(0.85, 1.0)
    for t in range(T):
        xy[t] = x, y
        vy += g
        x, y = x + vx, y + vy
        # Reflect off the walls (exact for one bounce per frame per axis).
        if x < lo:
            x, vx = 2 * lo - x, -vx
        elif x > hi:
            x, vx = 2 * hi - x, -vx
        if y < lo:
            y, vy = 2 * lo - y, -vy
        elif y > hi:
            y, vy = 2 * hi - y, -vy * restitution
            if abs(vy) < 2 * g:  # keep it hopping rather than resting on the floor
                vy = -rng.uniform(0.04, 0.08) * S
        x, y = min(max(x, lo), hi), min(max(y, lo), hi)
    return xy


# ----------------------------------------------------------------------------- background


def _texture(kind: str, rng: np.random.Generator, h: int, w: int, S: int) -> np.ndarray:
    """Texture values in [-1, 1], (h, w) float32."""
    from PIL import Image

    if kind == "noise":
        out = np.zeros((h, w), np.float32)
        for cells, weight in ((max(2, S // 16), 1.0), (max(3, S // 6), 0.4)):
            grid = rng.uniform(-1, 1, (math.ceil(h * cells / S) + 1,
                                       math.ceil(w * cells / S) + 1)).astype(np.float32)
            up = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
            out += weight * np.asarray(up)
        return np.clip(out / 1.2, -1, 1)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    period = rng.uniform(0.1, 0.25) * S
    sharp = rng.uniform(1.5, 4.0)  # tanh of a sine: soft-edged stripes
    if kind == "stripes":
        phi = rng.uniform(0, math.pi)
        proj = x * math.cos(phi) + y * math.sin(phi)
        return np.tanh(sharp * np.sin(2 * math.pi * proj / period)) / math.tanh(sharp)
    # checker
    cx = np.tanh(sharp * np.sin(math.pi * x / period))
    cy = np.tanh(sharp * np.sin(math.pi * y / period))
    return (cx * cy / math.tanh(sharp) ** 2).astype(np.float32)


def _background_frames(rng: np.random.Generator, T: int, S: int):
    """Panning background, float32 (T, S, S, 3) in 0..255, and its description."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    speed = rng.uniform(0.2, 0.8)
    ang = rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(ang), speed * math.sin(ang)  # px / frame the view moves
    pad_x, pad_y = int(math.ceil(abs(vx) * T)) + 2, int(math.ceil(abs(vy) * T)) + 2
    tex = _texture(kind, rng, S + pad_y, S + pad_x, S)  # (S + pad_y, S + pad_x)
    lo = rng.uniform(60, 120)
    hi = lo + rng.uniform(40, 80)
    tint = rng.uniform(-10, 10, 3)
    c0, c1 = (lo + tint).astype(np.float32), (hi + tint[::-1]).astype(np.float32)
    # Start where the whole pan stays on the canvas.
    ox0 = 0.5 if vx >= 0 else pad_x - 1.5
    oy0 = 0.5 if vy >= 0 else pad_y - 1.5
    tex = ((tex + 1) / 2).astype(np.float32)  # [0, 1]: share of colour c1
    m = np.empty((T, S, S), np.float32)
    for t in range(T):
        ox, oy = ox0 + vx * t, oy0 + vy * t
        ix, iy = int(ox), int(oy)
        fx, fy = np.float32(ox - ix), np.float32(oy - iy)
        a = tex[iy:iy + S + 1, ix:ix + S + 1]
        # Bilinear sampling at a sub-pixel offset: a smooth, slow pan.
        m[t] = ((1 - fy) * ((1 - fx) * a[:S, :S] + fx * a[:S, 1:S + 1])
                + fy * ((1 - fx) * a[1:S + 1, :S] + fx * a[1:S + 1, 1:S + 1]))
    rgb = c0 + m[..., None] * (c1 - c0)  # (T, S, S, 3)
    desc = {"kind": kind, "pan": [round(vx, 4), round(vy, 4)],
            "colours": [np.round(c0).astype(int).tolist(), np.round(c1).astype(int).tolist()]}
    return rgb, desc


# ----------------------------------------------------------------------------- video


def render_video(seed: int, index: int, num_frames: int = 24, size: int = 64):
    """Render video `index` of the set made with `seed`.

    Returns (frames uint8 (T, S, S, 3), meta dict). meta["objects"] holds per object: id,
    shape, colour_name, colour [R, G, B], size (radius in px), depth (0 = nearest), motion,
    angular_velocity, and per frame lists x, y (centroid, px), angle (deg), visible (bool:
    at least VISIBLE_MIN of its area shows), visible_fraction (share of its area seen,
    after occlusion and the frame edge) and in_frame (share of its area inside the frame).
    """
    T, S = int(num_frames), int(size)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    bg, bg_desc = _background_frames(rng, T, S)  # (T, S, S, 3)

    n_obj = int(rng.integers(2, 6))
    names = rng.choice(list(PALETTE), size=n_obj, replace=False)
    depths = rng.permutation(n_obj)
    objects = []
    for k in range(n_obj):
        shape = SHAPES[rng.integers(len(SHAPES))]
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        r = max(3.0, rng.uniform(0.07, 0.14) * S)
        xy = _simulate(motion, rng, T, S, r)
        omega = 0.0 if shape == "disc" else float(rng.uniform(-12, 12))
        angle0 = float(rng.uniform(0, 360))
        sprite = None
        if shape == "sprite":
            pattern = _sprite_pattern(rng)
            rows = np.nonzero(pattern)[0]
            shift = (rows.mean() + 0.5 - 2.5) * (2 * r / 5)  # area centroid -> 0
            sprite = (pattern, shift)
        objects.append({"shape": shape, "motion": motion, "r": r, "xy": xy, "omega": omega,
                        "angle0": angle0, "sprite": sprite, "name": str(names[k]),
                        "depth": int(depths[k])})

    order = sorted(range(n_obj), key=lambda k: objects[k]["depth"])  # nearest first
    colour_acc = np.zeros((T, S, S, 3), np.float32)
    transmit = np.ones((T, S, S), np.float32)  # share of light still passing to the back
    visible_fraction, in_frame = np.zeros((n_obj, T)), np.zeros((n_obj, T))
    for t in range(T):
        for k in order:  # front to back: nearer objects hide the ones behind
            o = objects[k]
            angle = o["angle0"] + o["omega"] * t
            alpha, top, left = _object_alpha(o["shape"], *o["xy"][t], o["r"], angle,
                                             o["sprite"])
            area = float(alpha.sum())
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + alpha.shape[0], S), min(left + alpha.shape[1], S)
            if y1 <= y0 or x1 <= x0 or area == 0:
                continue
            a = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
            tr = transmit[t, y0:y1, x0:x1]
            contrib = a * tr
            colour_acc[t, y0:y1, x0:x1] += contrib[..., None] * np.asarray(PALETTE[o["name"]],
                                                                           np.float32)
            tr *= 1 - a
            visible_fraction[k, t] = float(contrib.sum()) / area
            in_frame[k, t] = float(a.sum()) / area
    frames = colour_acc + transmit[..., None] * bg
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)

    meta_objects = []
    for k, o in enumerate(objects):
        meta_objects.append({
            "id": k, "shape": o["shape"], "colour_name": o["name"],
            "colour": list(PALETTE[o["name"]]), "size": round(o["r"], 3), "depth": o["depth"],
            "motion": o["motion"], "angular_velocity": round(o["omega"], 3),
            "x": np.round(o["xy"][:, 0], 3).tolist(), "y": np.round(o["xy"][:, 1], 3).tolist(),
            "angle": [round((o["angle0"] + o["omega"] * t) % 360, 3) for t in range(T)],
            "visible": (visible_fraction[k] >= VISIBLE_MIN).tolist(),
            "visible_fraction": np.round(visible_fraction[k], 4).tolist(),
            "in_frame": np.round(in_frame[k], 4).tolist(),
        })
    meta = {"format": "vidm-synth-1", "seed": int(seed), "index": int(index),
            "num_frames": T, "height": S, "width": S, "coordinates": COORDINATES,
            "palette": {k: list(v) for k, v in PALETTE.items()},
            "background": bg_desc, "objects": meta_objects}
    return frames, meta


def colour_centroid(frame: np.ndarray, colour, tol: float = 80.0, min_pixels: int = 3):
    """Centroid (x, y) in the JSON's pixel coordinates of the pixels within `tol` (RGB
    distance) of `colour` in a uint8 (H, W, 3) frame, and their count; (None, count) when
    fewer than `min_pixels` match."""
    d = frame.astype(np.float32) - np.asarray(colour, np.float32)
    mask = (d * d).sum(-1) < tol * tol
    n = int(mask.sum())
    if n < min_pixels:
        return None, n
    rows, cols = np.nonzero(mask)
    return (float(cols.mean()) + 0.5, float(rows.mean()) + 0.5), n


# ----------------------------------------------------------------------------- data set


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make_one(job: tuple) -> str:
    from vidm.video import write_video

    out, name, seed, index, T, S, fps = job
    frames, meta = render_video(seed, index, T, S)
    meta["video"], meta["fps"] = f"{name}.mp4", fps
    # One encoder thread: byte-identical files whatever the machine or worker count.
    write_video(Path(out) / f"{name}.mp4", frames, fps=fps, threads=1)
    _write_json(Path(out) / f"{name}.json", meta)
    return name


def generate_dataset(out: str | os.PathLike, videos: int, frames: int = 24, size: int = 64,
                     seed: int = 0, workers: int = 0, fps: float = 8,
                     progress: bool = True) -> list[Path]:
    """Write `videos` synthetic mp4 files (+ JSON ground truth) into `out`; returns the mp4
    paths. `workers` > 1 renders in that many processes (same output as 0)."""
    from tqdm import tqdm

    if videos < 1:
        raise ConfigError(f"--videos must be >= 1, got {videos}")
    if frames < 2:
        raise ConfigError(f"--frames must be >= 2, got {frames}")
    if size < 16 or size % 2:
        raise ConfigError(f"--size must be even and >= 16 (H.264 yuv420p), got {size}")
    if not fps or fps <= 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(videos - 1)))
    jobs = [(str(out), f"{i:0{digits}d}", seed, i, frames, size, fps) for i in range(videos)]
    bar = tqdm(total=videos, desc="synth", unit="video", disable=None if progress else True)
    try:
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context().Pool(min(workers, videos)) as pool:
                for _ in pool.imap_unordered(_make_one, jobs, chunksize=4):
                    bar.update()
        else:
            for job in jobs:
                _make_one(job)
                bar.update()
    finally:
        bar.close()
    return [out / f"{j[1]}.mp4" for j in jobs]
