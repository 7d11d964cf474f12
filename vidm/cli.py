"""The `vidm` command line. Subcommands live in `vidm.commands.*`; each module's `register`
adds its parser and sets `func`. Heavy imports (torch, av) happen inside the command
functions, so `vidm --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from vidm import __version__
from vidm.args import USAGE_EXIT, Parser
from vidm.errors import VidmError

# Order here is the order in `vidm --help`.
COMMAND_MODULES = (
    "vidm.commands.sample",
    "vidm.commands.data",
    "vidm.commands.train",
    "vidm.commands.pack",
    "vidm.commands.eval",
    "vidm.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Every `vidm` command; usage errors are one line and exit status 1 (`vidm.args.Parser`)."""
    parser = Parser(
        prog="vidm",
        description="Diffusion video generation and frame interpolation.",
    )
    parser.add_argument("--version", action="version", version=f"vidm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (USAGE_EXIT, said in one line)
        return e.code if isinstance(e.code, int) else USAGE_EXIT
    func = getattr(args, "func", None)
    if func is None:
        # `vidm` or `vidm data` alone: show the relevant help.
        (getattr(args, "_parser", None) or parser).print_help(sys.stderr)
        return USAGE_EXIT
    try:
        return int(func(args) or 0)
    except VidmError as e:
        print(f"vidm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vidm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
