"""`vidm data ...`: synthetic data, folder info (and, later, latent caching)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make, inspect and cache video data sets")
    p.set_defaults(_parser=p)
    p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
