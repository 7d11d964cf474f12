"""Pieces shared by the kernel files: Triton availability, the jit decorator that builds for
Triton's interpreter where triton.language was, the VIDM_KERNELS switch, the provider choice and
the output allocator (which can poison outputs with NaN so tests catch unwritten elements).

Importing this module changes no environment variable. Triton's interpreter is chosen by
TRITON_INTERPRET=1 set before triton is first imported (tests/conftest.py does so on a machine
without a GPU); without it, on such a machine, Triton imports but cannot launch (INTERPRET is
False, no CUDA device), so `auto` dispatch picks the torch paths and VIDM_KERNELS=triton is a
clear error. VIDM_KERNELS and xformers' presence are looked up once, at the first dispatch
(`reset_settings()` forgets them, for code that changes the environment afterwards)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from types import SimpleNamespace

import torch

from vidm.errors import ConfigError, ShapeError

# Triton's interpreter must be chosen before `import triton`: the language's own helpers
# (tl.zeros, tl.sum, ...) are @triton.jit functions, decorated once, at import, according to
# TRITON_INTERPRET. That is the caller's choice (see the module docstring); INTERPRET below
# reports what the import decided.
try:  # Triton ships Linux wheels only; elsewhere the torch fallbacks are all there is.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except (ImportError, OSError, RuntimeError):  # pragma: no cover - depends on the platform
    triton = None
    # Kernel signatures annotate `BLOCK: tl.constexpr`; annotations are evaluated when the
    # (never launched) kernel functions are defined, so `tl.constexpr` must exist.
    tl = SimpleNamespace(constexpr=None)
    HAS_TRITON = False


def _language_interpreted() -> bool:
    """Were triton.language's helpers built for the interpreter? (Decided at its import, which
    may have happened before ours, with whatever TRITON_INTERPRET was then.)"""
    try:
        from triton.language import standard
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - layout of other Triton versions
        return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")
    return any(isinstance(f, InterpretedFunction) for f in vars(standard).values())


# True: every kernel runs in Triton's interpreter (numpy on the host; slow; for tests).
INTERPRET = HAS_TRITON and _language_interpreted()


def jit(fn):
    """`@triton.jit`, built for the interpreter when triton.language was (see INTERPRET)."""
    if not HAS_TRITON:
        return fn  # never launched: every caller checks HAS_TRITON first
    if INTERPRET:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(fn)
    return triton.jit(fn)


def int32_addressable(*tensors: torch.Tensor) -> bool:
    """The kernels compute element offsets in int32: every tensor's largest offset must fit."""
    return all(sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if n > 0) < 2**31 - 1
               for t in tensors)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# The VIDM_KERNELS kill switch and the provider choice

MODES = ("auto", "torch", "triton")


@functools.cache
def kernel_mode() -> str:
    """VIDM_KERNELS: `auto` (default), `torch` (never Triton) or `triton` (always Triton; on a
    CPU that means the interpreter, which is for tests). Read once, at the first call (a bad
    value is not remembered: every call raises); `reset_settings()` makes the next call read it
    again."""
    mode = os.environ.get("VIDM_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"VIDM_KERNELS must be one of {'|'.join(MODES)}, got {mode!r}")
    return mode


def triton_runs_on(device: torch.device) -> bool:
    """Can our Triton kernels run on tensors of this device (compiled on CUDA, or interpreted)?"""
    if not HAS_TRITON:
        return False
    return INTERPRET or device.type == "cuda"


@functools.cache
def has_xformers() -> bool:
    """Is xformers installed? Looked up once (`reset_settings()` forgets the answer)."""
    return importlib.util.find_spec("xformers") is not None


def reset_settings() -> None:
    """Forget the VIDM_KERNELS mode and xformers' presence, so the next dispatch looks them up
    again: for code (tests, the GPU check) that changes VIDM_KERNELS after a kernel has run."""
    kernel_mode.cache_clear()
    has_xformers.cache_clear()


def require_triton(op: str, device: torch.device) -> None:
    """Raise a clear error where a forced Triton launch cannot work."""
    if not HAS_TRITON:
        raise ConfigError(f"{op}: VIDM_KERNELS=triton but Triton is not importable on this machine")
    if not triton_runs_on(device):
        raise ShapeError(f"{op}: Triton kernels need CUDA tensors here (got device {device}); "
                         "set TRITON_INTERPRET=1 to interpret them on the CPU")


def choose_provider(mode: str, *, is_cuda: bool, triton_ok: bool, shape_ok: bool,
                    fallbacks: tuple[str, ...]) -> str:
    """The dispatch rule, as a pure function (tested on its own).

    mode: VIDM_KERNELS value. is_cuda: the tensors live on a GPU. triton_ok: Triton can launch
    on that device. shape_ok: the kernel supports these shapes/dtypes. fallbacks: providers to
    use when Triton is not picked, best first, already filtered to the available ones; the last
    one is the plain torch op, always available.
    `triton` mode returns "triton" regardless: the kernel's own guards then raise if it cannot run.
    """
    if mode == "triton":
        return "triton"
    if mode == "auto" and is_cuda and triton_ok and shape_ok:
        return "triton"
    if mode == "auto":
        return fallbacks[0]
    return fallbacks[-1]


# ---------------------------------------------------------------------------------------------
# Output allocation (NaN poisoning for tests)

_POISON = [False]


@contextlib.contextmanager
def poison_outputs(enabled: bool = True):
    """Fill every kernel output with NaN before the launch, so an element a kernel forgets to
    write shows up as NaN in the comparison instead of as stale memory that happens to match."""
    old = _POISON[0]
    _POISON[0] = enabled
    try:
        yield
    finally:
        _POISON[0] = old


def new_output(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if _POISON[0] else out


def new_output_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    out = torch.empty_like(x, dtype=dtype)  # keeps x's memory format (NCHW or channels-last)
    return out.fill_(float("nan")) if _POISON[0] else out
