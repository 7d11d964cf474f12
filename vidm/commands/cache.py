"""`vidm data cache-latents`: encode a video folder once into a latent cache (vidm.data.latents).

Wired into the `data` group by `add_cache_latents(data_subparsers)`.
"""

from __future__ import annotations

import argparse

from vidm.outputs import OutputPlan, add_overwrite_arg


def add_cache_latents(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser(
        "cache-latents",
        help="encode a video folder into sharded latent files for diffusion training",
        description="Encode every usable video under --data with the autoencoder at --autoencoder "
                    "(posterior mean, times latent_scale) into safetensors shards + index.json "
                    "at --out. Train on it with data.latents=OUT.",
    )
    p.add_argument("--autoencoder", required=True, metavar="DIR", help="autoencoder model folder")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of videos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="cache folder to write (written whole, at the end)")
    p.add_argument("--size", type=int, default=64, help="frame size: short side resized, centre crop (default 64)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="encode at most the first N frames of each video")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="stored dtype")
    p.add_argument("--chunk-size", type=int, default=32, metavar="N", help="frames per encoder call")
    p.add_argument("--shard-mb", type=int, default=256, metavar="MB", help="target shard size")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    add_overwrite_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from vidm.data.latents import cache_latents
    from vidm.errors import ConfigError

    from vidm.args import plural
    from vidm.pipeline.pipeline import resolve_device

    if args.size < 1 or args.chunk_size < 1 or args.shard_mb < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise ConfigError("--size, --chunk-size, --shard-mb and --max-frames must be >= 1")
    resolve_device(args.device)  # e.g. --device cuda on a CPU-only build: one line, before any work
    plan = OutputPlan([args.autoencoder, args.data], overwrite=args.overwrite)
    out = plan.folder(args.out, make_parents=True)
    plan.check()
    with plan.write() as temp:
        index = cache_latents(args.autoencoder, args.data, temp[out], size=args.size, max_frames=args.max_frames,
                              chunk_size=args.chunk_size, dtype=args.dtype, device=args.device,
                              shard_mb=args.shard_mb, progress=sys.stderr.isatty())
    print(f"{args.out}: {plural(len(index['videos']), 'video')}, {plural(index['num_frames'], 'frame')}, latents "
          f"{tuple(index['latent_shape'])}, {plural(len(index['shards']), 'shard')}, {len(index['skipped'])} skipped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m vidm.commands.cache --autoencoder DIR --data DIR --out DIR` (same as
    `vidm data cache-latents ...`)."""
    import sys

    from vidm.errors import VidmError

    from vidm.args import Parser

    parser = Parser(prog="vidm data")
    add_cache_latents(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(["cache-latents", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except VidmError as e:
        print(f"vidm: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
