"""`vidm train <stage> ...`: a thin alias of `python -m vidm.train.<stage> ...` (same arguments; in a
checkout also `python -m train.<stage> ...`: the checkout's train/ folder is installed as `vidm.train`).
The stages and their trainers come from the stage registry (vidm.stages)."""

from __future__ import annotations

import argparse

from vidm import stages


def register(sub: argparse._SubParsersAction) -> None:
    names = stages.trainable()
    p = sub.add_parser(
        "train",
        help=f"train one stage's model ({', '.join(names)})",
        description="Same as `python -m vidm.train.STAGE ...` (`python -m train.STAGE ...` in a checkout); for "
                    "several processes use `accelerate launch -m vidm.train.STAGE ...` or "
                    "`torchrun -m vidm.train.STAGE ...`.",
        add_help=True,
    )
    p.add_argument("stage", choices=names, help="which model to train")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="--config FILE [key=value ...] [--resume auto|PATH] [--name NAME] (see `vidm train STAGE --help`)")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    import importlib

    module = importlib.import_module(stages.get(args.stage).trainer)
    return module.main(list(args.args))
