"""Compile every kernel variant the launchers can pick, for real GPU targets, on a machine
without a GPU: `python -m vidm.kernels.compile_check [--arch 90,80] [--quick]`.

Triton's frontend, its LLVM backend and the bundled `ptxas` need no GPU, so this catches what
the interpreter cannot: code the compiler rejects (types, layouts, constexpr misuse) and
register spills of the launch configurations (`ptxas -v`). It does not run anything; GPU
timings and results still need a GPU (`vidm bench kernels`). Takes several minutes
(fp32 variants are slow to compile; --quick skips them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

from . import _common

PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}
ATTN_TENSORS = ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")
GN_TENSORS = ("X", "Y", "DY", "DX")
GN_FP32 = ("W", "BIAS", "SCALE", "SHIFT", "MEAN", "RSTD", "DSCALE", "DSHIFT", "DW_PART", "DB_PART")
GN_FULL = ("SCALE", "SHIFT", "DSCALE", "DSHIFT")  # per-position modulation: in the tensor's dtype


def _ptxas_candidates() -> list[str]:
    import triton

    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return [os.path.join(folder, name) for name in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(folder, name))]


def _ptxas_stats(ptx: str, arch: int) -> tuple[int, int] | None:
    """(registers, spill-store bytes) of one kernel, or None if no bundled ptxas can read it."""
    gpu = f"sm_{arch}" + ("a" if arch >= 90 else "")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for ptxas in _ptxas_candidates():
            r = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(tmp, "k.o")],
                               capture_output=True, text=True)
            regs = re.search(r"Used (\d+) registers", r.stderr)
            spill = re.search(r"(\d+) bytes spill stores", r.stderr)
            if r.returncode == 0 and regs and spill:
                return int(regs.group(1)), int(spill.group(1))
    return None


def _variants(dtypes):
    """(kernel, signature-type function, constexprs, num_warps, label) for every launch the
    attention and GroupNorm launchers can make."""
    import importlib

    A = importlib.import_module(".attention", __package__)  # the modules, not the package's functions
    G = importlib.import_module(".group_norm", __package__)

    def attn_types(dtype):
        return lambda n: PTR[dtype] if n in ATTN_TENSORS else "*fp32" if n in ("LSE", "DELTA") \
            else "fp32" if n in ("qk_scale", "sm_scale") else "i32"

    def gn_types(dtype, full=False):
        return lambda n: PTR[dtype] if n in GN_TENSORS or (full and n in GN_FULL) else "*fp32" if n in GN_FP32 \
            else "fp32" if n in ("inv_n", "eps") else "i32"

    def attention(arch):
        seen = set()
        for dtype in dtypes:
            prec = A._precision(dtype)
            name = str(dtype).replace("torch.", "")
            for D in A.HEAD_DIMS:
                for causal in (False, True):
                    for bwd in (False, True):
                        cfg = A._general_config(D, dtype, bwd, arch)
                        c = dict(HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], CAUSAL=causal,
                                 PRECISION=prec)
                        for fn in ((A._attn_bwd_dkdv_kernel, A._attn_bwd_dq_kernel) if bwd else (A._attn_fwd_kernel,)):
                            yield fn, attn_types(dtype), c, cfg["num_warps"], f"{name} D={D} causal={causal}"
                        for n in range(1, A.SHORT_MAX + 1):
                            sc = A._short_config(n, D, dtype, bwd, arch)
                            if sc is None or (dtype, D, causal, bwd, sc) in seen:
                                continue
                            seen.add((dtype, D, causal, bwd, sc))
                            fn = A._attn_short_bwd_kernel if bwd else A._attn_short_fwd_kernel
                            yield (fn, attn_types(dtype), dict(HEAD_DIM=D, BLOCK=sc[0], CAUSAL=causal, PRECISION=prec),
                                   sc[1], f"{name} D={D} causal={causal} BLOCK={sc[0]}")
                yield A._attn_bwd_delta_kernel, attn_types(dtype), dict(HEAD_DIM=D, BLOCK_M=32), 4, f"{name} D={D}"

    def group_norm(arch):
        seen = set()
        for dtype in dtypes:
            name = str(dtype).replace("torch.", "")
            for C, groups in ((64, 32), (96, 32), (256, 32), (320, 32), (640, 32), (1280, 32), (320, 8), (1280, 8)):
                for S in (1, 16, 49, 64, 256, 1024, 4096):
                    for bwd in (False, True):
                        # per-sample (B, C) and per-position (full-shape) scale/shift
                        for full in (False, True):
                            bc, bs, one, warps = G._tile(C // groups, S, bwd, full)
                            if (dtype, bc, bs, one, bwd, full) in seen:
                                continue
                            seen.add((dtype, bc, bs, one, bwd, full))
                            c = dict(HAS_W=True, HAS_B=True, HAS_SCALE=True, HAS_SHIFT=True, SCALE_FULL=full,
                                     SHIFT_FULL=full, SILU=True, BLOCK_C=bc, BLOCK_S=bs, ONE_PASS=one)
                            yield (G._gn_bwd_kernel if bwd else G._gn_fwd_kernel, gn_types(dtype, full), c, warps,
                                   f"{name} BLOCK_C={bc} BLOCK_S={bs} one_pass={one} full={full}")

    return attention, group_norm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="90,80", help="compute capabilities, e.g. 90,80 (default)")
    parser.add_argument("--quick", action="store_true", help="16-bit variants only (fp32 ones compile slowly)")
    args = parser.parse_args(argv)
    if not _common.HAS_TRITON:
        print("compile_check: Triton is not installed", file=sys.stderr)
        return 1
    if _common.INTERPRET:
        # Triton was imported with TRITON_INTERPRET=1; the compiled kernels need a fresh
        # process with the interpreter off.
        if os.environ.get("TRITON_INTERPRET") == "0":
            print("compile_check: Triton was imported in interpreter mode", file=sys.stderr)
            return 1
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        cmd = [sys.executable, "-m", __spec__.name, *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd, env=env).returncode
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    dtypes = (torch.bfloat16, torch.float16) if args.quick else (torch.bfloat16, torch.float16, torch.float32)
    failures, spills, count = [], [], 0
    for arch in (int(a) for a in args.arch.split(",") if a.strip()):
        target = GPUTarget("cuda", arch, 32)
        for family in _variants(dtypes):
            for fn, types, consts, warps, label in family(arch):
                sig = {n: ("constexpr" if n in consts else types(n)) for n in fn.arg_names}
                tag = f"sm_{arch} {fn.__name__} {label} warps={warps}"
                try:
                    k = triton.compile(ASTSource(fn, sig, constexprs=consts), target=target,
                                       options={"num_warps": warps})
                except Exception as e:  # report every failing variant, not only the first
                    failures.append(f"{tag}: {type(e).__name__}: {str(e).splitlines()[-1][:200]}")
                    print(f"FAIL {tag}", flush=True)
                    continue
                count += 1
                stats = _ptxas_stats(k.asm["ptx"], arch)
                regs, spill = stats if stats else ("?", "?")
                print(f"ok   {tag} regs={regs} spill_bytes={spill} smem={k.metadata.shared}", flush=True)
                if stats and spill:
                    spills.append(f"{tag}: {spill} bytes")
    print(f"\n{count} variants compiled, {len(failures)} failed, {len(spills)} spill registers to local memory")
    for line in failures + spills:
        print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
