"""`vidm eval interpolate` and `vidm eval generate`: score a pipeline against held-out videos and
classical baselines; write report.json, report.md and report.png into --out (at the end, atomically).

The loops live in `vidm.eval.interpolate_eval` / `vidm.eval.generate_eval`, the tables and
figures in `vidm.eval.report`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vidm import args as argtypes
from vidm.bundled import MODEL_HELP
from vidm.commands.sample import add_infill_args, add_strategy_args, load_pipeline
from vidm.errors import ConfigError
from vidm.outputs import OutputPlan, add_overwrite_arg

DEFAULT_METHODS = "model,crossfade,flow"
# vidm.eval.interpolate_eval.MODEL_METHODS, here so `vidm --help` imports no torch
MODEL_METHODS = ("model", "model-bidirectional", "model-time-reversal", "model-cascade")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and sampling")
    g.add_argument("--model", default=None, help=MODEL_HELP)
    g.add_argument("--steps", type=argtypes.int_at_least(1, 10000), default=None,
                   help="solver steps per window (default: the model's)")
    g.add_argument("--sampler", default=None, help="euler, heun, dpmpp_2m or euler_ancestral (default: the model's)")
    g.add_argument("--guidance", type=argtypes.float_in(0.0, 100.0), default=None,
                   help="guidance on the input frames, 0 to 100 (default: the model's)")
    g.add_argument("--seed", type=argtypes.seed, default=0, help="sampling seed, 0 to 2**63-1 (default 0)")
    g.add_argument("--clip-seed", type=argtypes.seed, default=0,
                   help="seed of the clip choice, separate from --seed so the clips stay fixed (default 0)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="network precision (default auto)")
    g.add_argument("--batch", type=int, default=8, help="clips per model call (default 8)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output folder for report.json, report.md, report.png "
                                                "(written whole, at the end)")
    add_overwrite_arg(o)
    o.add_argument("--no-plot", action="store_true", help="skip report.png (no matplotlib needed)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a pipeline: interpolation vs baselines, generation vs real videos",
                       description="Evaluate a pipeline on held-out videos and write report.json, report.md and "
                                   "report.png into --out.")
    p.set_defaults(_parser=p)
    esub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    q = esub.add_parser(
        "interpolate", help="frame interpolation: model vs cross-fade and optical flow, per gap",
        description="Cut --clips held-out clips from the videos in --data (seeded), give every method frames s "
                    "and s+g for each gap g, and score the g-1 frames it makes against the true ones: PSNR, "
                    "SSIM, object-position error and miss rate (synthetic videos with their JSON), optionally "
                    "warping error; with --samples S > 1 also best-of-S and diversity. Tables give the mean "
                    "and a 95% t-interval over clips.")
    q.add_argument("--data", required=True, help="folder of held-out videos (not used in training)")
    q.add_argument("--gaps", default="2,4,8", help="comma-separated gaps in frames, each >= 2 (default 2,4,8)")
    q.add_argument("--clips", type=int, default=50, help="number of clips (default 50)")
    q.add_argument("--samples", type=int, default=1, help="model samples per clip (default 1)")
    q.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated: model (the pipeline, infill: conditioned on both end frames); "
                        f"model-bidirectional (forward and backward-motion passes fused, needs a backward stage); "
                        f"model-time-reversal (the same fusion with the motion model both ways); model-cascade "
                        f"(infill, then the upsampler stage at its frame size: VIDIM's cascade; needs an upsampler "
                        f"stage; compare with model at the upsampler's --size); splat (the "
                        f"model's splat start alone, no diffusion "
                        f"step); oracle (the true in-betweens' latents decoded: the decoder's share of "
                        f"the error); refs (a reference decoder from the end frames alone); and/or the "
                        f"baselines crossfade, flow (default {DEFAULT_METHODS})")
    q.add_argument("--warping", action="store_true", help="also the temporal warping error (slower: optical flow)")
    q.add_argument("--size", default=None, metavar="SIZE[,SIZE...]",
                   help="resize (short side) and centre-crop clips to SIZE x SIZE first (default: native; the "
                        "position metric needs native); several sizes, e.g. 64,256, evaluate the same clips "
                        "at each and report them side by side")
    q.add_argument("--examples", type=int, default=2, help="example strips in report.png (default 2)")
    add_infill_args(q)
    add_strategy_args(q, strategy=False)
    _add_model_args(q)
    q.set_defaults(func=run_interpolate)

    q = esub.add_parser(
        "generate", help="generation: unconditional and predicted videos vs real clips",
        description="Generate --num videos of --frames frames, predict the continuation of --num real clips from "
                    "their first --context frames, and compare both with the real clips: Fréchet distance in "
                    "the fixed stats-v1 feature space (colour, layout, texture, motion statistics; no download), "
                    "FVD when --i3d gives local I3D weights, PSNR/SSIM of the predicted frames, sample grids.")
    q.add_argument("--data", required=True, help="folder of held-out real videos")
    q.add_argument("--num", type=int, default=16, help="videos per set (default 16)")
    q.add_argument("--frames", type=int, default=16, help="frames per video (default 16, FVD's length)")
    q.add_argument("--context", type=int, default=4, help="given frames for the continuations (default 4)")
    q.add_argument("--i3d", default=None, metavar="PATH",
                   help="local Kinetics-400 I3D weights (.pt/.safetensors) for FVD; never downloaded")
    _add_model_args(q)
    q.set_defaults(func=run_generate)


# ---------------------------------------------------------------------- helpers


def _positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"--{name} must be >= {minimum}, got {value}")


def _parse_sizes(text) -> list[int | None]:
    """--size: None (native) or comma-separated ints >= 11 (the SSIM window)."""
    if text is None:
        return [None]
    try:
        sizes = list(dict.fromkeys(int(p) for p in str(text).split(",") if p.strip()))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected an integer or a list such as 64,256") from None
    if not sizes or min(sizes) < 11:
        raise ConfigError(f"--size {text!r}: every size must be >= 11")
    return sizes


def _parse_methods(text: str) -> list[str]:
    from vidm.eval.baselines import BASELINES

    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    from vidm.eval.interpolate_eval import PIPELINE_METHODS

    known = [*MODEL_METHODS, *PIPELINE_METHODS, *BASELINES]
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise ConfigError(f"--methods {text!r}: unknown {', '.join(bad) or 'empty list'}; "
                          f"choose from {', '.join(known)}")
    return names


def _check_common(args) -> None:
    _positive("steps", args.steps)
    _positive("batch", args.batch)
    if args.sampler is not None:
        from vidm.diffusion import get_sampler

        get_sampler(args.sampler)  # an unknown name fails before anything runs


def _model_name(args) -> str:
    if args.model is not None:
        return str(args.model)
    from vidm.pipeline.pipeline import default_model_dir

    return f"{default_model_dir()} (bundled)"


def _dtype_name(pipe, args) -> str:
    """The network precision really used (auto resolves per device)."""
    if pipe is None:
        return "n/a"
    dt = pipe.autocast_dtype
    return "fp32" if dt is None else str(dt).removeprefix("torch.")


def _plan_out(args) -> tuple[OutputPlan, Path]:
    """--out, checked before any work (policy: vidm.outputs): (plan, out folder)."""
    plan = OutputPlan([args.data, args.model, getattr(args, "i3d", None)], overwrite=args.overwrite)
    out = plan.folder(args.out, make_parents=True)
    plan.check()
    return plan, out


def _finish(plan: OutputPlan, out: Path, files: dict, md: str) -> None:
    """Write every file (only now, all or none), then echo the markdown tables to the terminal."""
    from vidm.eval.report import write_files

    with plan.write() as temp:
        write_files(temp[out], files)
    for name in files:
        print(f"wrote {out / name}")
    blocks, cur = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append("\n".join(cur))
            cur = []
    print("\n\n".join(blocks))


# ---------------------------------------------------------------------- commands


def run_interpolate(args) -> int:
    from vidm.eval.interpolate_eval import cut_clips, effective_settings, evaluate_interpolation, parse_gaps
    from vidm.eval.report import dumps, interpolation_figure, interpolation_markdown, require_matplotlib

    t_start = time.perf_counter()
    gaps = parse_gaps(args.gaps)
    methods = _parse_methods(args.methods)
    _positive("clips", args.clips)
    _positive("samples", args.samples)
    _positive("examples", args.examples, 0)
    sizes = _parse_sizes(args.size)
    _check_common(args)
    plan, out = _plan_out(args)
    if not args.no_plot:
        require_matplotlib()  # fail now, not after the whole run
    from vidm.eval.interpolate_eval import PIPELINE_METHODS

    pipe = load_pipeline(args) if {*MODEL_METHODS, *PIPELINE_METHODS} & set(methods) else None
    if pipe is None and args.samples > 1:
        print("vidm: --samples has no effect without the model (the baselines are deterministic)", file=sys.stderr)
    if pipe is not None:
        from vidm.eval.interpolate_eval import MODEL_METHODS as HOW

        for m in (m for m in methods if m in HOW):
            HOW[m].check(pipe)  # e.g. model-bidirectional without a backward stage: now, not later
    per_size = {}
    examples = {}
    for size in sizes:
        t0 = time.perf_counter()
        clips = cut_clips(args.data, args.clips, max(gaps) + 1, seed=args.clip_seed, size=size,
                          progress=not args.quiet)
        read_s = time.perf_counter() - t0
        if len(clips) < args.clips and size == sizes[0]:
            from vidm.args import plural

            print(f"vidm: {args.data} holds only {plural(len(clips), 'distinct clip')} of {max(gaps) + 1} frames; "
                  f"evaluating those", file=sys.stderr)
        result = evaluate_interpolation(clips, gaps, methods, pipe=pipe, samples=args.samples, seed=args.seed,
                                        steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                                        batch_size=args.batch, warping=args.warping, examples=args.examples,
                                        progress=not args.quiet, reinject=args.reinject)
        settings = {"model": _model_name(args) if pipe is not None else None, "data": str(args.data),
                    "clips": len(clips), "clips_requested": args.clips,
                    "videos": len({c.video for c in clips}), "gaps": gaps, "methods": methods,
                    "samples": result.report["samples"],
                    **(effective_settings(pipe, args.steps, args.sampler, args.guidance) if pipe is not None else {}),
                    **({"reinject": args.reinject} if pipe is not None else {}),
                    "seed": args.seed, "clip_seed": args.clip_seed, "batch": args.batch,
                    "device": str(pipe.device) if pipe is not None else "cpu", "dtype": _dtype_name(pipe, args),
                    "size": size or "native", "warping": args.warping, "interval": "t95"}
        report = {"kind": "vidm-eval-interpolate", "version": 1, "settings": settings, **result.report}
        report["timing"].update(read_s=read_s, total_s=time.perf_counter() - t0)
        per_size[size], examples[size] = report, result.examples
    if len(sizes) == 1:
        report = per_size[sizes[0]]
        report["timing"]["total_s"] = time.perf_counter() - t_start  # model load included
        md = interpolation_markdown(report)
        files = {"report.json": dumps(report), "report.md": md}
        if not args.no_plot:
            files["report.png"] = interpolation_figure(report, examples[sizes[0]])
    else:  # one section (and figure) per size, the same clips at each
        report = {"kind": "vidm-eval-interpolate-sizes", "version": 1, "sizes": sizes,
                  "by_size": {str(k): v for k, v in per_size.items()},
                  "timing": {"total_s": time.perf_counter() - t_start}}
        md = "\n".join(f"## {k}x{k}\n\n{interpolation_markdown(v)}" for k, v in per_size.items())
        files = {"report.json": dumps(report), "report.md": md}
        if not args.no_plot:
            for k, v in per_size.items():
                files[f"report_{k}.png"] = interpolation_figure(v, examples[k])
    _finish(plan, out, files, md)
    return 0


def run_generate(args) -> int:
    from vidm.eval.generate_eval import evaluate_generation
    from vidm.eval.interpolate_eval import cut_clips, effective_settings
    from vidm.eval.report import dumps, generation_figure, generation_markdown, png_bytes, require_matplotlib, \
        sample_grid

    t_start = time.perf_counter()
    _positive("num", args.num, 2)
    _positive("frames", args.frames, 2)
    _positive("context", args.context)
    if args.context >= args.frames:
        raise ConfigError(f"--context {args.context} must be smaller than --frames {args.frames}")
    _check_common(args)
    plan, out = _plan_out(args)
    if not args.no_plot:
        require_matplotlib()
    i3d = None
    if args.i3d is not None:
        from vidm.eval.i3d import load_i3d

        i3d = load_i3d(args.i3d)  # a missing file says where the weights come from
    pipe = load_pipeline(args)
    if i3d is not None:
        i3d = i3d.to(pipe.device)
    clips = cut_clips(args.data, args.num, args.frames, seed=args.clip_seed, size=pipe.config.size,
                      progress=not args.quiet)
    if len(clips) < 2:
        raise ConfigError(f"--data {args.data}: only {len(clips)} clip of {args.frames} frames; need 2 or more")
    import numpy as np

    from vidm.eval.colour_tracks import is_synthetic, markdown as colour_tracks_markdown

    real = np.stack([c.frames for c in clips])  # (N, T, S, S, 3)
    synthetic = all(is_synthetic(c.video) for c in clips)  # palette colours: only `vidm data synth` videos
    result = evaluate_generation(pipe, real, context=args.context, seed=args.seed, steps=args.steps,
                                 sampler=args.sampler, guidance=args.guidance, batch_size=args.batch, i3d=i3d,
                                 progress=not args.quiet, colour_tracks=synthetic)
    settings = {"model": _model_name(args), "data": str(args.data), "num": len(clips), "frames": args.frames,
                "context": args.context, **effective_settings(pipe, args.steps, args.sampler, args.guidance),
                "seed": args.seed, "clip_seed": args.clip_seed, "batch": args.batch, "device": str(pipe.device),
                "dtype": _dtype_name(pipe, args), "size": pipe.config.size, "i3d": args.i3d}
    report = {"kind": "vidm-eval-generate", "version": 1, "settings": settings,
              "real_clips": [{"video": c.video, "start": c.start} for c in clips], **result.report}
    report["timing"]["total_s"] = time.perf_counter() - t_start
    md = generation_markdown(report)
    if report["colour_tracks"] is not None:
        md += "\n" + colour_tracks_markdown(report["colour_tracks"])
    files = {"report.json": dumps(report), "report.md": md}
    for name in ("real", "generated", "predicted"):
        files[f"samples_{name}.png"] = png_bytes(sample_grid(result.videos[name], name, rows=8))
    if not args.no_plot:
        files["report.png"] = generation_figure(report, result.videos)
    _finish(plan, out, files, md)
    return 0
