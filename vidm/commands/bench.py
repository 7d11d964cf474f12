"""`vidm bench ...`: microbenchmarks. `vidm bench kernels` times the fused kernels against the
other providers (the same as `python -m vidm.kernels.bench`). More subcommands (e.g. `models`) hang
off the same `bench` group: add a `_register_<name>(sub)` and call it from `register`."""

from __future__ import annotations

import argparse

from vidm import args as argtypes
from vidm import stages


def _kernels(args: argparse.Namespace) -> int:
    # The kernel benchmark owns its options (vidm.kernels.bench.add_arguments): parse the words
    # given after `vidm bench kernels` with its parser, under this command's name.
    from vidm.kernels import bench

    try:
        options = bench.build_parser("vidm bench kernels", argtypes.Parser).parse_args(args.argv)
    except SystemExit as e:  # --help (0) or a usage error (USAGE_EXIT, said in one line)
        return e.code if isinstance(e.code, int) else argtypes.USAGE_EXIT
    return bench.run_from_args(options)


def _register_kernels(sub: argparse._SubParsersAction) -> None:
    # The options live in vidm.kernels.bench, which imports torch; `vidm --help` must not, so this
    # parser takes every word after `kernels` as it is ("\0" is no option prefix any argument
    # can start with, so `--quick`, `--help` are words too) and `_kernels` parses them.
    p = sub.add_parser("kernels", help="time fused attention / GroupNorm against SDPA, xformers, eager torch "
                                       "(options: `vidm bench kernels --help`)",
                       add_help=False, prefix_chars="\0")
    p.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=_kernels)


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

    args.kinds = ",".join(_names("--kinds", args.kinds, stages.names()))
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
    p.add_argument("--kinds", default=",".join(stages.names(required=True)), help="comma-separated model kinds (stages)")
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
