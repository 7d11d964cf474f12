"""Triton attention (kernels/attention.py) against a float64 torch reference, forward and
dq/dk/dv, under Triton's interpreter on CPU (compiled on a GPU where one exists).

The interpreter runs every program in Python, so the cases are chosen to cover each listed
value (N in {1, 7, 16, 100}, D in {16, 32, 64}, B*H up to a few hundred, fp32/fp16, causal or
not, short-sequence and general paths) without the full cartesian product; batch is small
except where batch is what is tested.
"""

import pytest
import torch

from kernel_helpers import fresh_generator, rel_err
from vidm.kernels import INTERPRET, attention_reference, attention_triton, poison_outputs
from vidm.errors import ShapeError

pytestmark = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(),
    reason="triton was imported without TRITON_INTERPRET=1 before kernels, and there is no GPU")

DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def make_qkv(B, H, N, D, dtype, gen, n_kv=None, layout="bhnd"):
    """q (B, H, N, D), k, v (B, H, n_kv, D); layout "bnhd" makes them strided views of
    (B, N, H, D) tensors, the way a fused qkv projection hands them over."""
    n_kv = N if n_kv is None else n_kv
    out = []
    for n in (N, n_kv, n_kv):
        if layout == "bnhd":
            t = torch.randn(B, n, H, D, generator=gen).transpose(1, 2)
        else:
            t = torch.randn(B, H, n, D, generator=gen)
        out.append(t.to(DEVICE, dtype).requires_grad_())
    return out


def check_against_reference(q, k, v, causal, short, scale=None, seed=None):
    dtype = q.dtype
    with poison_outputs():  # unwritten output elements would be NaN and fail below
        o = attention_triton(q, k, v, scale=scale, causal=causal, short=short)
        do = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed or 0)).to(o)
        grads = torch.autograd.grad(o, (q, k, v), do)
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = attention_reference(*ref_in, scale=scale, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, do.double())
    assert o.shape == q.shape and o.dtype == dtype
    for name, out, r in zip(("o", "dq", "dk", "dv"), (o, *grads), (ref, *ref_grads)):
        assert out.shape == r.shape and out.dtype == dtype, name
        assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten?) seed={seed}"
        err = rel_err(out, r)
        assert err < TOL[dtype], f"{name}: rel err {err:.2e} >= {TOL[dtype]} (seed={seed})"


# (B, H, N, D, dtype, causal, short): short None = the automatic choice (packed path for
# N <= 32), False = force the general (online-softmax) kernels on a short sequence.
CASES = [
    (1, 2, 1, 16, torch.float32, False, None),
    (1, 2, 1, 32, torch.float32, True, False),
    (2, 100, 7, 16, torch.float32, False, None),  # B*H = 200 sequences, 9 per forward program
    (1, 3, 7, 64, torch.float32, True, False),
    (2, 2, 16, 32, torch.float32, False, None),
    (1, 2, 16, 64, torch.float32, True, None),
    (1, 2, 100, 16, torch.float32, False, None),  # general path, masked tail (100 = 64 + 36)
    (1, 1, 100, 64, torch.float32, True, None),
    (1, 2, 100, 32, torch.float16, False, None),
    (2, 40, 16, 64, torch.float16, True, None),  # B*H = 80
    (1, 2, 7, 32, torch.float16, False, None),
    (1, 3, 25, 128, torch.float16, False, None),  # D = 128: packed forward, general backward
]


@pytest.mark.parametrize("B,H,N,D,dtype,causal,short", CASES)
def test_matches_reference(B, H, N, D, dtype, causal, short):
    gen, seed = fresh_generator()
    q, k, v = make_qkv(B, H, N, D, dtype, gen)
    check_against_reference(q, k, v, causal, short, seed=seed)


@pytest.mark.parametrize("n_q,n_kv,causal", [(7, 70, False), (70, 7, True)])
def test_strided_inputs_cross_attention_and_scale(n_q, n_kv, causal):
    # q/k/v as transposed views of (B, N, H, D), N_q != N_kv (causal: top-left aligned, as
    # SDPA), an explicit scale.
    gen, seed = fresh_generator()
    q, _, _ = make_qkv(1, 2, n_q, 32, torch.float32, gen, layout="bnhd")
    _, k, v = make_qkv(1, 2, n_q, 32, torch.float32, gen, n_kv=n_kv, layout="bnhd")
    check_against_reference(q, k, v, causal=causal, short=None, scale=0.3, seed=seed)


@pytest.mark.skipif(DEVICE != "cuda", reason="bf16 needs a GPU: Triton's interpreter gets bf16 dots wrong")
def test_bf16_gpu():
    gen, seed = fresh_generator()
    q, k, v = make_qkv(2, 4, 100, 64, torch.bfloat16, gen)
    check_against_reference(q, k, v, causal=False, short=None, seed=seed)


# GPU-only cases (the GPU check runs them; they skip on a CPU): the base presets' shapes in bf16
# and fp16, both paths, and fp32 where exactness is asserted (1e-4 holds only because fp32
# inputs get input_precision="ieee" dots; TF32's 10-bit mantissa would miss it at N = 1024).
GPU_CASES = [
    (2, 4, 1024, 64, torch.bfloat16, False, None),  # spatial 32x32 (autoencoder mid), general path
    (1024, 2, 16, 64, torch.bfloat16, False, None),  # temporal T=16 at 32x32 latents, packed path
    (64, 6, 16, 64, torch.bfloat16, True, False),  # T=16, general kernels forced, causal
    (4, 4, 256, 64, torch.bfloat16, False, None),  # spatial 16x16 (content / motion)
    (256, 4, 16, 64, torch.float16, False, None),
    (2, 8, 333, 128, torch.float16, True, None),  # D = 128, masked tail
    (2, 2, 25, 32, torch.float16, False, True),  # packed path forced, fp16 tiles
    (1, 4, 1024, 64, torch.float32, False, None),  # exact fp32 over a long sequence
    (128, 2, 16, 32, torch.float32, False, None),  # fp32 packed path
]


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU only: compiled kernels, bf16 and the presets' sizes")
@pytest.mark.parametrize("B,H,N,D,dtype,causal,short", GPU_CASES)
def test_gpu_matches_reference(B, H, N, D, dtype, causal, short):
    gen, seed = fresh_generator()
    layout = "bnhd" if B % 2 else "bhnd"
    q, k, v = make_qkv(B, H, N, D, dtype, gen, layout=layout)
    check_against_reference(q, k, v, causal, short, seed=seed)


def test_fp32_dots_are_exact():
    # What the GPU cases above rely on: fp32 inputs never take TF32 dots.
    from vidm.kernels.attention import _precision

    assert _precision(torch.float32) == "ieee"
    assert _precision(torch.bfloat16) == _precision(torch.float16) == "tf32"


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's limit")
def test_bf16_in_interpreter_raises():
    q = torch.randn(1, 2, 8, 32, dtype=torch.bfloat16)
    with pytest.raises(ShapeError, match="bf16 needs a GPU"):
        attention_triton(q, q, q)


def test_unsupported_head_dim_raises():
    q = torch.randn(1, 2, 8, 48)
    with pytest.raises(ShapeError, match="head dim 48"):
        attention_triton(q, q, q)


@pytest.mark.parametrize("shapes,match", [
    (((1, 2, 8, 32), (1, 2, 8, 32), (1, 2, 9, 32)), "same shape"),
    (((1, 2, 8, 32), (1, 3, 8, 32), (1, 3, 8, 32)), "agree"),
    (((1, 2, 8, 32), (1, 2, 8, 16), (1, 2, 8, 16)), "agree"),
    (((2, 8, 32), (2, 8, 32), (2, 8, 32)), "4-D"),
])
def test_mismatched_shapes_raise(shapes, match):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ShapeError, match=match):
        attention_triton(q, k, v)


def test_mixed_dtypes_raise():
    q = torch.randn(1, 2, 8, 32)
    with pytest.raises(ShapeError, match="dtypes"):
        attention_triton(q, q.half(), q)


def test_forcing_short_path_on_long_sequence_raises():
    q = torch.randn(1, 1, 40, 16)
    with pytest.raises(ShapeError, match="short-sequence"):
        attention_triton(q, q, q, short=True)
