"""Triton GroupNorm + scale/shift + SiLU (kernels/group_norm.py) against a float64 torch
reference, forward and dx/dweight/dbias/dscale/dshift, under Triton's interpreter on CPU.

Cases cover C in {32, 96, 320}, groups {8, 32}, H*W in {1, 49, 256}, with/without affine
parameters and scale/shift, SiLU or none, NCHW, channels-last and 5-D, fp32, fp16 and bf16, the
one-pass and the looped (large group) kernels, without the full cartesian product. Per-position
modulation (scale/shift of x's full shape, PosGN) gets its own cases: odd spatial sizes (1,
7x5, 3x4x4), one and several channels per group, full and per-channel operands mixed, and
scale/shift laid out as the model makes them (NCHW slices of one tensor), channels-last,
contiguous or expanded over the batch.
"""

import importlib


import pytest
import torch

from kernel_helpers import fresh_generator, rel_err
from vidm.kernels import INTERPRET, group_norm_reference, group_norm_torch, group_norm_triton, poison_outputs
from vidm.errors import ConfigError, ShapeError

gn_module = importlib.import_module("vidm.kernels.group_norm")  # `kernels.group_norm` is the function

pytestmark = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(),
    reason="triton was imported without TRITON_INTERPRET=1 before kernels, and there is no GPU")

DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def make_inputs(shape, affine, modulate, layout, dtype, gen, full=None, mod_layout="contiguous"):
    """x and its parameters. full: None, "both", "scale" or "shift" — which of scale/shift are
    per position (x's shape; the others stay (B, C)), laid out as mod_layout says."""
    B, C = shape[:2]
    # Offset and scaled so mean and variance are not the trivial 0 and 1.
    x = (torch.randn(shape, generator=gen) * 1.7 + 0.4).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
    elif layout == "permuted":  # (B, H, C, W) viewed as (B, C, H, W): spatial dims do not merge
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    params = {
        "weight": 1 + 0.5 * torch.randn(C, generator=gen) if affine in ("both", "weight") else None,
        "bias": torch.randn(C, generator=gen) if affine in ("both", "bias") else None,
        "scale": 0.5 * torch.randn(B, C, generator=gen) if modulate in ("both", "scale") else None,
        "shift": torch.randn(B, C, generator=gen) if modulate in ("both", "shift") else None,
    }
    x = x.to(DEVICE).requires_grad_()
    params = {k: None if v is None else v.to(DEVICE).requires_grad_() for k, v in params.items()}
    if full is not None:
        for name, std in (("scale", 0.5), ("shift", 1.0)):
            if full in ("both", name):
                params[name] = per_position(shape, mod_layout, name == "shift", std, dtype, gen)
    return x, params


def per_position(shape, layout, second, std, dtype, gen):
    """A full-shape modulation operand (autograd reaches it; it is a leaf or a view of one).
    slices: channels [C, 2C) or [2C, 3C) of one (B, 4C, *spatial) tensor, as the positional
    MLP writes scale and shift (NCHW strides, batch stride 4C*S); channels_last: that memory
    format; expanded: one map for every sample (batch stride 0)."""
    B, C = shape[:2]
    leaf = lambda *size: (std * torch.randn(size, generator=gen)).to(DEVICE, dtype)  # noqa: E731
    if layout == "slices":
        return leaf(B, 4 * C, *shape[2:]).requires_grad_()[:, (1 + second) * C:(2 + second) * C]
    if layout == "expanded":
        return leaf(1, *shape[1:]).requires_grad_().expand(shape)
    t = leaf(*shape)
    if layout == "channels_last":
        t = t.to(memory_format=torch.channels_last if t.ndim == 4 else torch.channels_last_3d)
    return t.requires_grad_()


def check_against_reference(x, G, params, act, seed):
    names = ["x"] + [k for k, v in params.items() if v is not None]
    inputs = [x] + [v for v in params.values() if v is not None]
    with poison_outputs():  # unwritten output elements would be NaN and fail below
        y = group_norm_triton(x, G, **params, act=act)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y)
        grads = torch.autograd.grad(y, inputs, dy)
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    ref_params = {k: (ref_in[names.index(k)] if k in names else None) for k in params}
    ref = group_norm_reference(ref_in[0], G, **ref_params, act=act)
    ref_grads = torch.autograd.grad(ref, ref_in, dy.double())
    assert y.dtype == x.dtype and y.shape == x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and x.ndim == 4 and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), "y should keep x's memory format"
    tol = TOL[x.dtype]
    # Where fp32 roundoff alone exceeds the tolerance (one channel per group: dx is a small
    # difference of large terms, and PyTorch's own fp32 GroupNorm misses 1e-4 there too), the
    # kernel must stay within 4x of PyTorch's fp32 error on the same inputs (measured: <= 2.2x).
    torch_errs = _torch_fp32_errors(inputs, names, params, G, act, dy, (ref, *ref_grads)) \
        if x.dtype == torch.float32 else None
    for i, (name, out, r) in enumerate(zip(["y"] + ["d" + n for n in names], (y, *grads), (ref, *ref_grads))):
        assert out.shape == r.shape, name
        assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten?) seed={seed}"
        err = rel_err(out, r)
        bound = tol if torch_errs is None else max(tol, 4 * torch_errs[i])
        assert err < bound, f"{name}: rel err {err:.2e} >= {bound:.2e} (seed={seed})"


def _torch_fp32_errors(inputs, names, params, G, act, dy, refs):
    """rel_err of PyTorch's fp32 GroupNorm (and its gradients) against the float64 reference."""
    t_in = [t.detach().clone().requires_grad_() for t in inputs]
    t_params = {k: (t_in[names.index(k)] if k in names else None) for k in params}
    try:
        y = group_norm_torch(t_in[0], G, **t_params, act=act)
        grads = torch.autograd.grad(y, t_in, dy)
    except RuntimeError:  # layouts torch's kernel rejects: no baseline, plain tolerance
        return [0.0] * len(refs)
    return [rel_err(o, r) for o, r in zip((y, *grads), refs)]


# (shape, groups, affine, modulate, act, layout, dtype)
CASES = [
    ((2, 32, 7, 7), 8, "both", "both", "silu", "nchw", torch.float32),
    ((1, 96, 16, 16), 32, "both", None, None, "channels_last", torch.float32),
    ((1, 320, 1, 1), 32, None, "both", "silu", "nchw", torch.float32),  # H*W = 1
    ((1, 320, 16, 16), 8, "weight", "scale", "silu", "nchw", torch.float32),
    ((1, 96, 7, 7), 8, "bias", "shift", None, "channels_last", torch.float32),
    ((1, 32, 4, 7, 7), 8, "both", "both", "silu", "channels_last", torch.float32),  # 5-D (B, C, T, H, W)
    ((1, 32, 3, 4, 4), 32, "both", "both", None, "nchw", torch.float32),  # 5-D, one channel per group
    ((1, 32, 7, 7), 8, "both", "both", "silu", "permuted", torch.float32),
    ((1, 96, 7, 7), 32, "both", "both", "silu", "nchw", torch.float16),
    ((1, 320, 16, 16), 32, "both", "both", "silu", "channels_last", torch.float16),
    # The interpreter handles bf16 loads/stores and fp32 arithmetic (no dots here), so GroupNorm's
    # bf16 path is tested on the CPU too; tolerance: bf16's 8-bit mantissa.
    ((1, 96, 7, 7), 8, "both", "both", "silu", "nchw", torch.bfloat16),
]


@pytest.mark.parametrize("shape,G,affine,modulate,act,layout,dtype", CASES)
def test_matches_reference(shape, G, affine, modulate, act, layout, dtype):
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, affine, modulate, layout, dtype, gen)
    check_against_reference(x, G, params, act, seed)


@pytest.mark.parametrize("shape,layout,dtype", [
    ((1, 32, 7, 7), "nchw", torch.float32),
    ((1, 96, 2, 4, 4), "channels_last", torch.float16),
])
def test_looped_path_matches_reference(shape, layout, dtype, monkeypatch):
    # Shrink the tile budget so these small groups take the chunked two-sweep kernels
    # (several chunks and a partial last one), as large UNet groups do on a GPU.
    monkeypatch.setattr(gn_module, "FUSED_MAX", 0)
    monkeypatch.setattr(gn_module, "FUSED_MAX_BWD", 0)
    monkeypatch.setattr(gn_module, "CHUNK", 64)
    monkeypatch.setattr(gn_module, "CHUNK_BWD", 64)
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, "both", "both", layout, dtype, gen)
    check_against_reference(x, 8, params, "silu", seed)


# Per-position modulation: (shape, groups, affine, full, act, layout, mod_layout, dtype); the
# operand that is not full (full="scale" / "shift") is the (B, C) one.
POS_CASES = [
    ((2, 32, 7, 5), 8, "both", "both", "silu", "nchw", "slices", torch.float32),  # odd 7x5, 4 ch/group
    ((2, 32, 7, 5), 32, "both", "both", None, "channels_last", "contiguous", torch.float32),  # 1 ch/group
    ((2, 32, 1, 1), 8, "both", "both", "silu", "nchw", "slices", torch.float32),  # H*W = 1
    ((1, 32, 3, 4, 4), 8, "both", "both", "silu", "channels_last", "channels_last", torch.float32),  # 5-D
    ((1, 32, 3, 4, 4), 32, "both", "scale", None, "nchw", "slices", torch.float32),  # 5-D, 1 ch/group
    ((2, 32, 7, 5), 8, "both", "shift", "silu", "nchw", "expanded", torch.float32),
    ((2, 32, 7, 5), 8, None, "scale", "silu", "channels_last", "expanded", torch.float32),
    ((1, 96, 7, 5), 32, "both", "both", "silu", "nchw", "slices", torch.float16),
    ((1, 32, 7, 5), 8, "both", "both", "silu", "channels_last", "contiguous", torch.bfloat16),
]


@pytest.mark.parametrize("shape,G,affine,full,act,layout,mod_layout,dtype", POS_CASES)
def test_per_position_matches_reference(shape, G, affine, full, act, layout, mod_layout, dtype):
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, affine, "both", layout, dtype, gen, full=full, mod_layout=mod_layout)
    check_against_reference(x, G, params, act, seed)
    for name in ("scale", "shift"):
        if full in ("both", name):
            assert params[name].shape == x.shape


@pytest.mark.parametrize("shape,G,full,act,layout,mod_layout", [
    ((1, 32, 7, 5), 8, "both", "silu", "nchw", "slices"),  # several chunks, a partial last one
    ((1, 32, 3, 4, 4), 8, "scale", "silu", "channels_last", "contiguous"),  # 5-D; shift (B, C)
    ((2, 32, 7, 5), 8, "shift", None, "channels_last", "expanded"),
])
def test_per_position_looped_path_matches_reference(shape, G, full, act, layout, mod_layout, monkeypatch):
    monkeypatch.setattr(gn_module, "FUSED_MAX", 0)
    monkeypatch.setattr(gn_module, "FUSED_MAX_BWD", 0)
    monkeypatch.setattr(gn_module, "CHUNK", 64)
    monkeypatch.setattr(gn_module, "CHUNK_BWD", 64)
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, "both", "both", layout, torch.float32, gen, full=full, mod_layout=mod_layout)
    check_against_reference(x, G, params, act, seed)


def test_per_position_zero_modulation_is_plain_group_norm():
    # scale = shift = 0 of full shape computes what no modulation computes, bit for bit (the
    # positional ResBlock with its MLP's last layer at zero relies on it), in both providers.
    gen, _ = fresh_generator()
    x, params = make_inputs((2, 32, 7, 5), "both", None, "nchw", torch.float32, gen)
    zeros = torch.zeros_like(x)
    for fn in (group_norm_triton, group_norm_torch):
        plain = fn(x, 8, params["weight"], params["bias"], act="silu")
        assert torch.equal(fn(x, 8, params["weight"], params["bias"], zeros, zeros, act="silu"), plain)


def test_torch_fallback_is_the_plain_chain():
    # The fallback works in place where it can. It must compute exactly what the plain torch
    # chain computes (so existing models' outputs stay as they were), but for a full-shape scale
    # without autograd (y + y * scale in place): the same to rounding, exact for scale 0.
    gen, _ = fresh_generator()
    F = torch.nn.functional
    x = torch.randn(2, 32, 7, 5, generator=gen)
    w, b = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    for shape in ((2, 32), (2, 32, 7, 5)):
        sc, sh = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        per = lambda t: t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))  # noqa: E731
        chain = F.silu(F.group_norm(x, 8, w, b) * (1 + per(sc)) + per(sh))
        leaves = [t.clone().requires_grad_() for t in (x, sc, sh)]
        assert torch.equal(group_norm_torch(leaves[0], 8, w, b, leaves[1], leaves[2], "silu"), chain)
        assert torch.equal(group_norm_torch(x, 8, w, b, None, leaves[2], None), F.group_norm(x, 8, w, b) + per(sh))
        with torch.no_grad():
            out = group_norm_torch(x, 8, w, b, sc, sh, "silu")
            if len(shape) == 2:
                assert torch.equal(out, chain)
            torch.testing.assert_close(out, chain, rtol=1e-6, atol=1e-6)
            zero = torch.zeros(shape)
            assert torch.equal(group_norm_torch(x, 8, w, b, zero, zero, "silu"), F.silu(F.group_norm(x, 8, w, b)))


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU only: the larger bf16 case, compiled")
def test_bf16_gpu():
    gen, seed = fresh_generator()
    x, params = make_inputs((2, 320, 16, 16), "both", "both", "nchw", torch.bfloat16, gen)
    check_against_reference(x, 32, params, "silu", seed)


# GPU-only cases (the GPU check runs them; they skip on a CPU): the base presets' shapes in each
# dtype, one-pass and looped kernels, NCHW, channels-last and 5-D.
GPU_CASES = [
    ((2, 128, 64, 64), 32, "both", None, "silu", "nchw", torch.bfloat16),  # autoencoder: looped fwd + bwd
    ((4, 256, 32, 32), 32, "both", "both", "silu", "channels_last", torch.bfloat16),  # one-pass fwd, looped bwd
    ((8, 512, 4, 4), 32, "both", "both", "silu", "nchw", torch.bfloat16),  # UNet bottom
    ((4, 384, 8, 8), 32, "both", "both", None, "channels_last", torch.float16),
    ((1, 64, 16, 32, 32), 32, "both", "both", "silu", "nchw", torch.float16),  # 5-D (B, C, T, H, W)
    ((2, 64, 128, 128), 32, "both", None, "silu", "channels_last", torch.float32),  # large group, looped
    ((4, 256, 16, 16), 32, "weight", "scale", "silu", "nchw", torch.float32),
]
# Per-position modulation at the base motion preset's ResBlock shapes (one-pass and looped).
GPU_POS_CASES = [
    ((16, 128, 32, 32), 32, "both", "both", "silu", "nchw", "slices", torch.bfloat16),  # looped bwd
    ((16, 256, 16, 16), 32, "both", "both", "silu", "channels_last", "contiguous", torch.float16),
    ((16, 512, 4, 4), 32, "both", "scale", None, "nchw", "slices", torch.float32),
    ((2, 128, 64, 64), 32, "both", "both", "silu", "nchw", "expanded", torch.bfloat16),  # looped fwd + bwd
]


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU only: compiled kernels at the presets' sizes")
@pytest.mark.parametrize("shape,G,affine,modulate,act,layout,dtype", GPU_CASES)
def test_gpu_matches_reference(shape, G, affine, modulate, act, layout, dtype):
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, affine, modulate, layout, dtype, gen)
    check_against_reference(x, G, params, act, seed)


@pytest.mark.skipif(DEVICE != "cuda", reason="GPU only: compiled kernels at the presets' sizes")
@pytest.mark.parametrize("shape,G,affine,full,act,layout,mod_layout,dtype", GPU_POS_CASES)
def test_gpu_per_position_matches_reference(shape, G, affine, full, act, layout, mod_layout, dtype):
    gen, seed = fresh_generator()
    x, params = make_inputs(shape, affine, "both", layout, dtype, gen, full=full, mod_layout=mod_layout)
    check_against_reference(x, G, params, act, seed)


def test_large_mean_is_stable():
    # mean 1000 x std: E[x^2] - E[x]^2 would lose every digit in fp32; the kernels do not.
    gen, seed = fresh_generator()
    x = (torch.randn(1, 32, 8, 8, generator=gen) + 1000.0).requires_grad_()
    ref = group_norm_reference(x.detach().double(), 8)
    assert rel_err(group_norm_triton(x, 8), ref) < 1e-3, f"seed={seed}"


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x=(2, 30, 4, 4), G=8), ShapeError, "not divisible"),
    (dict(x=(2, 32, 4, 4), G=8, weight=(16,)), ShapeError, "weight"),
    (dict(x=(2, 32, 4, 4), G=8, scale=(32,)), ShapeError, "scale"),
    (dict(x=(2, 32, 4, 4), G=8, shift=(3, 32)), ShapeError, "shift"),
    (dict(x=(32,), G=8), ShapeError, r"\(B, C"),
    (dict(x=(2, 32, 4, 4), G=0), ShapeError, "num_groups"),
    # neither (B, C) nor x's shape: both shapes named; no implicit broadcasting
    (dict(x=(2, 32, 4, 4), G=8, scale=(2, 32, 4)), ShapeError,
     r"scale must have shape \(B, C\) = \(2, 32\) or x's shape \(2, 32, 4, 4\), got \(2, 32, 4\)"),
    (dict(x=(2, 32, 4, 4), G=8, shift=(2, 32, 1, 1)), ShapeError, r"shift .*\(2, 32, 4, 4\), got \(2, 32, 1, 1\)"),
    (dict(x=(2, 32, 7, 5), G=8, scale=(1, 32, 7, 5)), ShapeError, r"\(2, 32, 7, 5\), got \(1, 32, 7, 5\)"),
    (dict(x=(1, 32, 3, 4, 4), G=8, shift=(1, 32, 4, 4, 3)), ShapeError, r"\(1, 32, 3, 4, 4\), got \(1, 32, 4, 4, 3\)"),
    (dict(x=(2, 32, 4, 4), G=8, act="gelu"), ConfigError, "act"),
])
def test_bad_inputs_raise(kwargs, error, match):
    shapes = dict(kwargs)
    x = torch.randn(shapes.pop("x"))
    G = shapes.pop("G")
    act = shapes.pop("act", None)
    params = {k: torch.randn(v) for k, v in shapes.items()}
    with pytest.raises(error, match=match):
        group_norm_triton(x, G, **params, act=act)
