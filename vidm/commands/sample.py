"""`vidm generate`, `vidm interpolate` and `vidm predict`: sample videos with a pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidm import args as argtypes
from vidm.bundled import MODEL_HELP
from vidm.args import plural
from vidm.errors import ConfigError, VideoError
from vidm.outputs import OutputPlan, add_overwrite_arg

OUTPUT_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".gif", "")
MAX_STEPS = 10000
MAX_GUIDANCE = 100.0


def _add_common(p: argparse.ArgumentParser, samples: bool = True) -> None:
    g = p.add_argument_group("model and sampling")
    g.add_argument("--model", default=None, help=MODEL_HELP)
    g.add_argument("--steps", type=argtypes.int_at_least(1, MAX_STEPS), default=None,
                   help="solver steps per window (default: the model's, 20)")
    g.add_argument("--sampler", default=None,
                   help="euler, heun, dpmpp_2m or euler_ancestral (default: the model's, dpmpp_2m)")
    g.add_argument("--guidance", type=argtypes.float_in(0.0, MAX_GUIDANCE), default=None,
                   help=f"guidance scale on the input frames, 0 to {MAX_GUIDANCE:g}; 1 = off (default: the model's)")
    g.add_argument("--seed", type=argtypes.seed, default=0,
                   help="random seed, 0 to 2**63-1; same seed + device + settings = same frames and same file "
                        "bytes (default 0)")
    if samples:
        g.add_argument("--samples", type=argtypes.positive_int, default=1,
                       help="different answers for the same inputs, written as OUT_s0, OUT_s1, ... (default 1)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="network precision (auto: bf16 where the hardware has it, else fp32)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", required=True,
                   help="output video: .mp4, .webm, .mkv, .mov, .gif, or a folder path (png frames)")
    o.add_argument("--fps", type=argtypes.positive_float, default=None,
                   help="output frame rate, > 0 (default: the model's or the input's)")
    o.add_argument("--strip", default=None, metavar="PNG", help="also write a side-by-side strip of inputs and results")
    add_overwrite_arg(o)
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def add_infill_args(p: argparse.ArgumentParser) -> None:
    """--init / --init-sigma (for `VideoPipeline.set_infill`); also used by `vidm eval interpolate`."""
    g = p.add_argument_group("in-between start")
    g.add_argument("--init", default=None, choices=["splat", "noise"],
                   help="where the solver starts: splat = the end frames moved to each in-between time by "
                        "global matching, plus noise at --init-sigma; noise = pure noise (default: the model's, splat)")
    g.add_argument("--init-sigma", type=argtypes.positive_float, default=None,
                   help="noise level of the splat start; higher lets the model change more (default: the model's, 0.5)")


# The names of vidm.pipeline.options.STRATEGIES, here so `vidm --help` imports no torch
# (tests/test_strategies.py checks they agree).
STRATEGY_CHOICES = ("infill", "bidirectional", "time-reversal")
MAX_REINJECT = 50


def add_strategy_args(p: argparse.ArgumentParser, strategy: bool = True) -> None:
    """--strategy (how in-between windows are sampled) and --reinject; `vidm eval interpolate`
    takes --reinject only (its --methods name the strategies)."""
    g = p.add_argument_group("in-between strategy")
    if strategy:
        g.add_argument("--strategy", default="infill", choices=STRATEGY_CHOICES,
                       help="infill = the motion model conditioned on both end frames; bidirectional = a forward pass "
                            "from the start fused at every step with the backward-motion model's pass from the end "
                            "(needs a pipeline with a backward stage); time-reversal = the same fusion with the motion "
                            "model both ways (default infill)")
    g.add_argument("--reinject", type=argtypes.int_at_least(0, MAX_REINJECT), default=0,
                   help="noise re-injections per solver step over the first half of the steps: fresh noise back to "
                        f"that step's level and the step again (0 to {MAX_REINJECT}; the paper's sampler uses 5 with "
                        "--strategy bidirectional; default 0)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate videos from nothing (content model, then motion model)",
                       description="Generate videos: the content model makes the first frame, the motion model "
                                   "makes the rest window by window.")
    p.add_argument("--frames", type=argtypes.positive_int, default=16, help="frames per video (default 16)")
    p.add_argument("--num", type=argtypes.positive_int, default=1,
                   help="number of videos, written as OUT_0, OUT_1, ... (default 1)")
    _add_common(p, samples=False)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("interpolate", help="make the frames between two images, or raise a video's frame rate",
                       description="Two modes: `vidm interpolate A B --frames N -o OUT` makes N frames between "
                                   "images A and B (OUT holds A, the N frames, B); `vidm interpolate --video IN "
                                   "--factor K -o OUT` raises IN's frame rate K times.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="the two end frames (png, jpg, ...)")
    p.add_argument("--frames", type=argtypes.positive_int, default=None,
                   help="in-between frames for two images (default 7; not with --video)")
    p.add_argument("--video", default=None, help="a video whose frame rate to raise (instead of two images)")
    p.add_argument("--factor", type=argtypes.int_at_least(2), default=None,
                   help="frame-rate factor for --video, >= 2 (e.g. 2, 4)")
    p.add_argument("--max-frames", type=argtypes.int_at_least(2), default=None,
                   help="read at most this many frames of --video (from its start)")
    add_infill_args(p)
    add_strategy_args(p)
    p.add_argument("--cascade", action="store_true",
                   help="VIDIM's cascade: after the base model, the pipeline's upsampler stage remakes the in-betweens "
                        "at its larger size from the base video and the end frames (needs an upsampler stage)")
    _add_common(p)
    p.set_defaults(func=run_interpolate)

    p = sub.add_parser("predict", help="continue a video",
                       description="Continue a video: the motion model makes --frames new frames after the "
                                   "given ones. OUT holds the given frames followed by the new ones.")
    p.add_argument("--video", required=True, help="the video (or image folder) to continue")
    p.add_argument("--frames", type=argtypes.positive_int, required=True, help="number of new frames")
    p.add_argument("--context", type=argtypes.positive_int, default=None,
                   help="use only the last N frames of the video (only those are read; default: all of them)")
    _add_common(p)
    p.set_defaults(func=run_predict)


# ---------------------------------------------------------------------- helpers


def _plan(args, count: int, tag: str, inputs: list):
    """Every output of the command (-o, numbered when there are several, and --strip), checked
    now, before any model loads: (plan, video paths, strip path or None)."""
    out = Path(args.output)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise VideoError(f"{out}: cannot write '{out.suffix}' (use .mp4, .webm, .mkv, .mov, .gif or a folder path)")
    if args.strip is not None and Path(args.strip).suffix.lower() != ".png":
        raise VideoError(f"{args.strip}: --strip must be a .png path")
    plan = OutputPlan([*inputs, args.model], overwrite=args.overwrite)
    add = plan.folder if out.suffix == "" else plan.file  # no suffix: a folder of png frames
    paths = [add(p) for p in _numbered(out, tag, count)]
    strip = None if args.strip is None else plan.file(args.strip)
    plan.check()
    return plan, paths, strip


def _numbered(out: Path, tag: str, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{tag}{i}{out.suffix}") for i in range(n)]


def _positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"--{name} must be >= {minimum}, got {value}")


def _available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux MemAvailable), None if unknown."""
    from vidm.video import host_available_memory

    return host_available_memory()


# What one input frame costs while a command holds it: the uint8 frame, the output copy and, with
# a reference autoencoder, its float pixels (3 + 3 + 12 bytes per pixel).
_BYTES_PER_PIXEL = 3 * 6


def _check_fits(path, count: int, height: int, width: int, hint: str) -> None:
    """Refuse, before decoding, to read `count` frames that would not fit in memory."""
    need = count * height * width * _BYTES_PER_PIXEL
    have = _available_memory()
    if have is not None and need > have:
        raise ConfigError(f"{path}: {plural(count, 'frame')} of {width}x{height} need about {need / 1e9:.1f} GB, "
                          f"more than the {have / 1e9:.1f} GB available; {hint}")


def load_pipeline(args):
    """The pipeline of --model/--device/--dtype with --init/--init-sigma applied where the command has them
    (also used by `vidm eval`)."""
    from vidm.diffusion import get_sampler
    from vidm.pipeline import VideoPipeline

    if args.sampler is not None:
        get_sampler(args.sampler)  # an unknown name fails before the model loads

    pipe = VideoPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    pipe.set_infill(getattr(args, "init", None), getattr(args, "init_sigma", None))
    return pipe


def _say_resize(pipe, h: int, w: int, cascade: bool = False) -> None:
    S = pipe.upsampler_size if cascade else pipe.config.size
    if (h, w) != (S, S) and not pipe.uses_references:
        print(f"vidm: frames are {w}x{h}; the model works at {S}x{S}: resized for the model and back",
              file=sys.stderr)


def _write(plan: OutputPlan, paths: list[Path], videos, fps: float, strip: Path | None, rows, labels) -> None:
    """Write every video and the strip, all or none (vidm.outputs), then say what was written
    (the size as stored: H.264 / VP9 round odd sizes up, said on the same line)."""
    import warnings

    from vidm.errors import VidmWarning
    from vidm.video import write_video, written_size

    done = []
    with plan.write() as temp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*padded to", category=VidmWarning)  # said below instead
        for path, video in zip(paths, videos):
            write_video(temp[path], video, fps=fps)
            h, w = video.shape[1:3]
            H, W = written_size(path, h, w)
            padded = "" if (H, W) == (h, w) else f", padded from {w}x{h}: yuv420p needs even sizes"
            done.append(f"wrote {path} ({plural(len(video), 'frame')}, {W}x{H}, {fps:g} fps{padded})")
        if strip is not None:
            from vidm.strip import save_strip

            h = rows[0].shape[1]
            save_strip(temp[strip], rows, labels, scale=max(1, min(4, 128 // max(h, 1))), max_frames=12)
            done.append(f"wrote {strip}")
    print("\n".join(done))


# ---------------------------------------------------------------------- commands


def _fps(args, *fallbacks) -> float:
    """--fps when given, else the first known fallback (the input's, then the model's)."""
    if args.fps is not None:
        return args.fps
    return next(f for f in fallbacks if f)


def run_generate(args) -> int:
    _positive("frames", args.frames)
    _positive("num", args.num)
    _positive("steps", args.steps)
    plan, paths, strip = _plan(args, args.num, "", [])
    pipe = load_pipeline(args)
    videos = pipe.generate(num_frames=args.frames, num_videos=args.num, seed=args.seed, steps=args.steps,
                           sampler=args.sampler, guidance=args.guidance, progress=not args.quiet)
    _write(plan, paths, videos, _fps(args, pipe.config.fps), strip, list(videos),
           [f"video {i}" for i in range(args.num)])
    return 0


def run_interpolate(args) -> int:
    import numpy as np

    from vidm.video import read_clip, read_image, read_video_info

    _positive("frames", args.frames)
    _positive("samples", args.samples)
    _positive("steps", args.steps)
    if args.video is not None:
        if args.images:
            raise ConfigError("give either two images or --video, not both")
        if args.frames is not None:
            raise ConfigError("--frames goes with two images; with --video the output has (N-1) x --factor + 1 "
                              "frames (use --max-frames N to read fewer input frames)")
        if args.factor is None:
            raise ConfigError("--video needs --factor K (the frame-rate factor)")
        _positive("factor", args.factor, 2)
        _positive("max-frames", args.max_frames, 2)
        plan, paths, strip = _plan(args, args.samples, "s", [args.video])
        info = read_video_info(args.video)
        count = info.num_frames if args.max_frames is None else min(args.max_frames, info.num_frames)
        _check_fits(args.video, count * args.factor, info.height, info.width,
                    "use --max-frames N to read fewer frames")
        frames = read_clip(args.video, num_frames=args.max_frames, partial=True)
        pipe = load_pipeline(args)
        pipe.check_strategy(args.strategy)
        pipe.check_cascade(args.cascade)
        _say_resize(pipe, *frames.shape[1:3], args.cascade)
        videos = pipe.interpolate_video(frames, args.factor, samples=args.samples, seed=args.seed, steps=args.steps,
                                        sampler=args.sampler, guidance=args.guidance, progress=not args.quiet,
                                        strategy=args.strategy, reinject=args.reinject, cascade=args.cascade)
        fps = args.fps if args.fps is not None else (info.fps or pipe.config.fps) * args.factor
        _write(plan, paths, videos, fps, strip, [frames] + list(videos),
               ["input"] + [f"x{args.factor} s{i}" for i in range(args.samples)])
        return 0
    if args.factor is not None:
        raise ConfigError("--factor goes with --video; for two images use --frames")
    if args.max_frames is not None:
        raise ConfigError("--max-frames goes with --video; two images are two frames")
    if len(args.images) != 2:
        raise ConfigError(f"interpolate needs two images (or --video IN --factor K), got {len(args.images)}")
    if args.frames is None:
        args.frames = 7
    plan, paths, strip = _plan(args, args.samples, "s", args.images)
    a, b = (read_image(p) for p in args.images)
    if a.shape != b.shape:
        raise VideoError(f"{args.images[1]}: size {b.shape[1]}x{b.shape[0]} differs from {args.images[0]}'s "
                         f"{a.shape[1]}x{a.shape[0]}; resize them to one size first")
    pipe = load_pipeline(args)
    pipe.check_strategy(args.strategy)
    pipe.check_cascade(args.cascade)
    _say_resize(pipe, *a.shape[:2], args.cascade)
    mids = pipe.interpolate(a, b, num_frames=args.frames, samples=args.samples, seed=args.seed, steps=args.steps,
                            sampler=args.sampler, guidance=args.guidance, progress=not args.quiet,
                            strategy=args.strategy, reinject=args.reinject, cascade=args.cascade)
    videos = [np.concatenate([a[None], m, b[None]]) for m in mids]
    _write(plan, paths, videos, _fps(args, pipe.config.fps), strip, videos,
           [f"sample {i}" for i in range(args.samples)])
    return 0


def run_predict(args) -> int:
    import numpy as np

    from vidm.video import read_clip, read_last_frames, read_video_info

    _positive("frames", args.frames)
    _positive("samples", args.samples)
    _positive("context", args.context)
    _positive("steps", args.steps)
    plan, paths, strip = _plan(args, args.samples, "s", [args.video])
    info = read_video_info(args.video)  # the header's count and size: nothing decoded past one frame
    if args.context is None:  # the whole video is given, and is in the output
        _check_fits(args.video, info.num_frames, info.height, info.width,
                    "use --context N to continue from the last N frames")
        frames = read_clip(args.video)
    else:  # only the last --context frames are read, seeking: memory bounded by --context
        frames = read_last_frames(args.video, args.context)
    pipe = load_pipeline(args)
    _say_resize(pipe, *frames.shape[1:3])
    future = pipe.predict(frames, args.frames, samples=args.samples, seed=args.seed, steps=args.steps,
                          sampler=args.sampler, guidance=args.guidance, progress=not args.quiet)
    videos = [np.concatenate([frames, f]) for f in future]
    _write(plan, paths, videos, _fps(args, info.fps, pipe.config.fps), strip, [frames] + list(future),
           ["given"] + [f"future s{i}" for i in range(args.samples)])
    return 0
