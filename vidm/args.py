"""Command-line plumbing shared by `vidm` and `python -m train.<stage>` (no torch imports).

`Parser` is argparse with vidm's error convention: a usage error (unknown flag, missing or
malformed value) prints one line, `vidm: error: ...`, and exits with status 1, the same as every
other bad input (README "Commands"). The `type=` helpers check numbers at the boundary: a value
that is not finite or out of range is a usage error naming the flag, before any work.
"""

from __future__ import annotations

import argparse
import math
import sys

USAGE_EXIT = 1  # exit status of a usage error (the same as any other bad input)
SEED_MIN, SEED_MAX = 0, 2**63 - 1


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors are one line and exit status 1 (subparsers made with
    `add_subparsers().add_parser` are Parsers too)."""

    def error(self, message: str):  # argparse calls it for every usage error
        root = self.prog.split()[0]
        print(f"{root}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def _number(text: str, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(minimum: int, maximum: int | None = None):
    """type=: an integer >= minimum (and <= maximum)."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def float_in(low: float | None = None, high: float | None = None, low_open: bool = False):
    """type=: a finite float with low <= x (low < x if low_open) and x <= high."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and value > high):
            lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
            hi = "" if high is None else f"<= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {' and '.join(s for s in (lo, hi) if s)}, "
                                             f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


seed = int_at_least(SEED_MIN, SEED_MAX)
positive_int = int_at_least(1)
positive_float = float_in(0.0, low_open=True)
finite_float = float_in()


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 frame', '2 frames' (`many` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
