"""`vidm bench ...`: microbenchmarks. `vidm bench kernels` times the fused kernels against the
other providers (the same as `python -m kernels.bench`). More subcommands (e.g. `models`) hang
off the same `bench` group: add a `_register_<name>(sub)` and call it from `register`."""

from __future__ import annotations

import argparse

from vidm import args as argtypes


def add_kernel_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the kernel benchmark; shared with `python -m kernels.bench` (kept here, in a
    module without torch imports, so `vidm --help` stays fast)."""
    p.add_argument("--quick", action="store_true",
                   help="small shapes and few repetitions (CPU: about a minute)")
    p.add_argument("--ops", default="attention,group_norm,group_norm_pos",
                   help="comma-separated ops to time: attention, group_norm (per-sample scale/shift), "
                        "group_norm_pos (per-position scale/shift, PosGN) (default: all three)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="input dtype (auto: bf16 on a GPU, fp32 on a CPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="device to time on (auto: cuda if available)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per case (median is reported)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the results as JSON here")
    p.add_argument("--shapes", default=None, metavar="FILE.json",
                   help='time these shapes instead of the preset\'s: {"attention": [[label, B, H, N, D], ...], '
                        '"group_norm": [[label, B*T, C, H, W(, groups)], ...], "group_norm_pos": [likewise]}')
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="also time torch.compile of the eager chain (backend default inductor; "
                        "'eager' traces without code generation); one compile per case "
                        "(group_norm_pos has it on a GPU without this flag)")


def _kernels(args: argparse.Namespace) -> int:
    from kernels.bench import run_from_args

    return run_from_args(args)


def _register_kernels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernels", help="time fused attention / GroupNorm against SDPA, xformers, eager torch",
                       description="Median time, TFLOP/s or GB/s and the fraction of the measured device "
                                   "peak for each kernel provider over video-UNet shapes.")
    add_kernel_bench_arguments(p)
    p.set_defaults(func=_kernels)


MODEL_KINDS = ("autoencoder", "content", "motion")
MODEL_DTYPES = ("fp32", "bf16")


def _names(flag: str, text: str, known) -> list[str]:
    """A comma-separated list of known names, or a one-line ConfigError naming the flag."""
    from vidm.errors import ConfigError

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"{flag} {text!r}: {'unknown ' + ', '.join(repr(b) for b in bad) if bad else 'nothing given'}"
                          f" (choose from {', '.join(known)})")
    return names


def _models(args: argparse.Namespace) -> int:
    from vidm.models.bench import main
    from vidm.models.presets import preset_names
    from vidm.pipeline.pipeline import resolve_device

    args.kinds = ",".join(_names("--kinds", args.kinds, MODEL_KINDS))
    known = sorted(set.intersection(*(set(preset_names(k)) for k in args.kinds.split(","))))
    args.presets = ",".join(_names("--presets", args.presets, known))
    args.dtypes = ",".join(_names("--dtypes", args.dtypes, MODEL_DTYPES))
    resolve_device(args.device)  # e.g. cuda on a CPU-only build: one line

    argv = ["--presets", args.presets, "--kinds", args.kinds, "--dtypes", args.dtypes, "--repeats", str(args.repeats),
            "--device", args.device]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return main(argv)


def _register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="parameter counts and forward time per frame of the model presets",
                       description="Parameter counts and median forward time per frame (fp32 and bf16 autocast) "
                                   "of each model preset; the same as `python -m vidm.models.bench`.")
    p.add_argument("--presets", default="tiny,base", help="comma-separated presets (default tiny,base)")
    p.add_argument("--kinds", default="autoencoder,content,motion", help="comma-separated model kinds")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--repeats", type=argtypes.positive_int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=argtypes.positive_int, default=None,
                   help="torch intra-op threads (default: torch's)")
    p.set_defaults(func=_models)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="microbenchmarks (kernels, models)")
    p.set_defaults(_parser=p)
    bench_sub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    _register_kernels(bench_sub)
    _register_models(bench_sub)
