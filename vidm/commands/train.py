"""`vidm train <stage> ...`: a thin alias of `python -m vidm.train.<stage> ...` (same arguments; in a
checkout also `python -m train.<stage> ...`: the checkout's train/ folder is installed as `vidm.train`)."""

from __future__ import annotations

import argparse

STAGES = ("autoencoder", "content", "motion")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the autoencoder, content or motion model",
        description="Same as `python -m vidm.train.STAGE ...` (`python -m train.STAGE ...` in a checkout); for "
                    "several processes use `accelerate launch -m vidm.train.STAGE ...` or "
                    "`torchrun -m vidm.train.STAGE ...`.",
        add_help=True,
    )
    p.add_argument("stage", choices=STAGES, help="which model to train")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="--config FILE [key=value ...] [--resume auto|PATH] [--name NAME] (see `vidm train STAGE --help`)")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    import importlib

    module = importlib.import_module(f"vidm.train.{args.stage}")
    return module.main(list(args.args))
