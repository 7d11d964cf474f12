"""Randomised correctness sweep of the Triton kernels over the model presets' real shapes.

Every distinct attention (spatial, temporal) and GroupNorm shape of the presets' models
(vidm.gpucheck.shapes) becomes one case with a random dtype (the three cycle, so each shape set
sees all of them), a random batch multiple and a random memory layout (attention: contiguous
or the strided q/k/v views a fused qkv projection hands over; GroupNorm: NCHW or channels-last),
with the modulation the model uses (per-sample scale/shift) and, where kernels.group_norm
accepts it, per-position scale/shift too. Each case runs the Triton kernel forward and
backward (outputs NaN-poisoned, so unwritten elements fail) against the float64 reference;
the tolerances are the kernel tests' (fp32 1e-4, fp16 5e-3, bf16 2e-2, relative to the
largest reference magnitude).
"""

from __future__ import annotations

import random
import time

TOL_NAMES = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 2e-2}


def _dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _rel_err(out, ref) -> float:
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-2)).item()


def per_position_supported() -> bool:
    """Does kernels.group_norm take scale/shift of x's full shape (per-position modulation)?"""
    import torch

    from vidm.kernels.group_norm import check_group_norm_inputs
    from vidm.errors import ShapeError

    x = torch.zeros(1, 8, 2, 2)
    try:
        check_group_norm_inputs(x, 4, None, None, torch.zeros_like(x), torch.zeros_like(x), None)
    except ShapeError:
        return False
    return True


def attention_case(case: dict, dtype: str, mult: int, layout: str, device, gen) -> dict:
    import torch

    from vidm.kernels import attention_reference, attention_triton, poison_outputs

    B, H, N, D = case["shape"]
    B *= mult
    dt = _dtype(dtype)

    def make():
        if layout == "bnhd":  # strided views of (B, N, H, D), as rearrange of a fused qkv gives
            t = torch.randn(B, N, H, D, generator=gen, device=device).transpose(1, 2)
        else:
            t = torch.randn(B, H, N, D, generator=gen, device=device)
        return t.to(dt).requires_grad_()

    q, k, v = make(), make(), make()
    with poison_outputs():
        o = attention_triton(q, k, v)
        do = torch.randn(o.shape, generator=gen, device=device).to(dt)
        grads = torch.autograd.grad(o, (q, k, v), do)
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = attention_reference(*ref_in)
    ref_grads = torch.autograd.grad(ref, ref_in, do.double())
    return {name: _rel_err(out, r) for name, out, r in zip(("o", "dq", "dk", "dv"), (o, *grads), (ref, *ref_grads))}


def group_norm_case(case: dict, dtype: str, mult: int, layout: str, per_position: bool, device, gen) -> dict:
    import torch

    from vidm.kernels import group_norm_reference, group_norm_triton, poison_outputs

    shape = list(case["shape"])
    shape[0] *= mult
    B, C = shape[:2]
    G = case["groups"]
    x = (torch.randn(shape, generator=gen, device=device) * 1.7 + 0.4).to(_dtype(dtype))
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
    x.requires_grad_()
    params = {"weight": 1 + 0.5 * torch.randn(C, generator=gen, device=device),
              "bias": torch.randn(C, generator=gen, device=device)}
    if case["modulated"]:
        mod_shape = shape if per_position else [B, C]
        params["scale"] = 0.5 * torch.randn(mod_shape, generator=gen, device=device)
        params["shift"] = torch.randn(mod_shape, generator=gen, device=device)
    params = {k: v.requires_grad_() for k, v in params.items()}
    names = ["x", *params]
    inputs = [x, *params.values()]
    with poison_outputs():
        y = group_norm_triton(x, G, **params, act=case["act"])
        dy = torch.randn(y.shape, generator=gen, device=device).to(y.dtype)
        grads = torch.autograd.grad(y, inputs, dy)
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    ref = group_norm_reference(ref_in[0], G, **dict(zip(names[1:], ref_in[1:])), act=case["act"])
    ref_grads = torch.autograd.grad(ref, ref_in, dy.double())
    return {("y" if i == 0 else "d" + names[i - 1]): _rel_err(out, r)
            for i, (out, r) in enumerate(zip((y, *grads), (ref, *ref_grads)))}


def plan(cases: dict, seed: int, dtypes: list[str], mults: list[int], per_position: bool,
         attention_dtypes: list[str] | None = None) -> list[dict]:
    """One entry per distinct shape (plus a per-position one per modulated GroupNorm shape when
    supported): its dtype (cycled), random batch multiple and layout. The order is seeded and
    interleaves the (op, dtype) groups, so a sweep cut short by its time box has still seen
    every op in every dtype."""
    rng = random.Random(seed)
    items = []
    att_dtypes = attention_dtypes or dtypes
    for i, c in enumerate(cases["attention"]):
        items.append({"op": "attention", "case": c, "dtype": att_dtypes[i % len(att_dtypes)],
                      "mult": rng.choice(mults), "layout": rng.choice(["bhnd", "bnhd"])})
    for i, c in enumerate(cases["group_norm"]):
        variants = [False] + ([True] if per_position and c["modulated"] else [])
        for pp in variants:
            items.append({"op": "group_norm", "case": c, "dtype": dtypes[(i + pp) % len(dtypes)],
                          "mult": rng.choice(mults), "layout": rng.choice(["nchw", "channels_last"]),
                          "per_position": pp})
    groups: dict[tuple, list] = {}
    for it in items:
        groups.setdefault((it["op"], it["dtype"]), []).append(it)
    queues = list(groups.values())
    for q in queues:
        rng.shuffle(q)
    rng.shuffle(queues)
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop())
    return out


def run_item(item: dict, device, seed: int) -> dict:
    import torch

    c = item["case"]
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    rec = {"op": item["op"], "label": c["label"], "models": c["models"], "dtype": item["dtype"],
           "batch_mult": item["mult"], "layout": item["layout"], "seed": seed,
           "tol": TOL_NAMES[item["dtype"]]}
    try:
        if item["op"] == "attention":
            shape = [c["shape"][0] * item["mult"], *c["shape"][1:]]
            errs = attention_case(c, item["dtype"], item["mult"], item["layout"], device, gen)
        else:
            shape = [c["shape"][0] * item["mult"], *c["shape"][1:]]
            rec.update(groups=c["groups"], act=c["act"],
                       modulation=("per-position" if item.get("per_position") else "per-sample")
                       if c["modulated"] else None)
            errs = group_norm_case(c, item["dtype"], item["mult"], item["layout"], bool(item.get("per_position")),
                                   device, gen)
        rec["shape"] = shape
        rec["errors"] = errs
        worst = max(errs.values())
        rec["max_err"] = worst
        rec["ok"] = bool(worst < rec["tol"])  # NaN (an unwritten element) compares False
    except Exception as e:  # a compile error, OOM, a guard: recorded, the sweep goes on
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        rec["ok"] = False
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rec["s"] = round(time.perf_counter() - t0, 3)
    return rec


def summarize(records: list[dict]) -> dict:
    """Per (op, dtype): cases, passed, worst error / tolerance."""
    out: dict[str, dict] = {}
    for r in records:
        key = f"{r['op']} {r['dtype']}"
        s = out.setdefault(key, {"cases": 0, "ok": 0, "worst_err_over_tol": 0.0})
        s["cases"] += 1
        s["ok"] += bool(r["ok"])
        if "max_err" in r:
            ratio = r["max_err"] / r["tol"]
            s["worst_err_over_tol"] = max(s["worst_err_over_tol"], ratio) if ratio == ratio else float("inf")
    return out
