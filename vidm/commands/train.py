"""`vidm train <stage> ...`: a thin alias of `python -m train.<stage> ...` (same arguments)."""

from __future__ import annotations

import argparse

STAGES = ("autoencoder", "content", "motion")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the autoencoder, content or motion model",
        description="Same as `python -m train.STAGE ...`; for several processes use "
                    "`accelerate launch -m train.STAGE ...` or `torchrun -m train.STAGE ...`.",
        add_help=True,
    )
    p.add_argument("stage", choices=STAGES, help="which model to train")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="--config FILE [key=value ...] [--resume auto|PATH] [--name NAME] (see `vidm train STAGE --help`)")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    import importlib

    module = importlib.import_module(f"train.{args.stage}")
    return module.main(list(args.args))
