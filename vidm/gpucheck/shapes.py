"""The attention and GroupNorm shapes the model presets really produce.

`capture(preset)` builds the preset's autoencoder, content and motion models on the `meta`
device (no memory, no arithmetic: seconds on a CPU) and runs one forward pass of each at the
frame size and clip length of that preset's training config, recording every call of
`kernels.attention` and `kernels.group_norm`. Each call is kept per sample (batch 1; motion:
one clip of T frames), so a consumer picks its own batch. Used by the GPU check's sweep
(correctness) and benchmark (speed) parts.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

# Per preset: frame size, frames per motion clip, and the training batches of configs/*/<preset>.yaml
# (autoencoder: clips x frames per clip; content: latent frames; motion: clips).
PRESET_DATA = {
    "base": {"size": 256, "num_frames": 16, "batch": {"autoencoder": 8 * 4, "content": 64, "motion": 8}},
    "tiny": {"size": 64, "num_frames": 8, "batch": {"autoencoder": 4 * 2, "content": 16, "motion": 4}},
}


@contextmanager
def _recording(calls: list, model: str, net):
    """Record the kernel calls made inside the block; attention calls are tagged with the kind
    of attention module they came from (spatial, temporal or spacetime)."""
    from vidm import kernels

    attention, group_norm = kernels.attention, kernels.group_norm
    kind = ["spatial"]
    hooks = []
    for m in net.modules():
        name = type(m).__name__
        if name in ("TemporalAttention", "SpaceTimeAttention"):
            label = name.replace("Attention", "").lower()
            hooks.append(m.register_forward_pre_hook(lambda mod, args, label=label: kind.__setitem__(0, label)))
            hooks.append(m.register_forward_hook(lambda mod, args, out: kind.__setitem__(0, "spatial")))

    def rec_attention(q, k, v, scale=None, causal=False):
        calls.append({"op": "attention", "model": model, "kind": kind[0], "shape": list(q.shape),
                      "kv_len": int(k.shape[2]), "causal": bool(causal)})
        return attention(q, k, v, scale, causal)

    def rec_group_norm(x, num_groups, weight, bias, scale=None, shift=None, act=None, eps=1e-5):
        calls.append({"op": "group_norm", "model": model, "shape": list(x.shape), "groups": int(num_groups),
                      "affine": weight is not None, "modulated": scale is not None or shift is not None,
                      "act": act})
        return group_norm(x, num_groups, weight, bias, scale, shift, act, eps)

    kernels.attention, kernels.group_norm = rec_attention, rec_group_norm
    try:
        yield
    finally:
        kernels.attention, kernels.group_norm = attention, group_norm
        for h in hooks:
            h.remove()


def capture(preset: str = "base") -> list[dict]:
    """Every attention / GroupNorm call of one forward pass of each model of `preset`, per sample."""
    import torch

    from vidm.models.autoencoder import AutoencoderKL
    from vidm.models.presets import get_preset
    from vidm.models.unet2d import ContentUNet
    from vidm.models.unet3d import MotionUNet

    data = PRESET_DATA[preset]
    S, T = data["size"], data["num_frames"]
    calls: list[dict] = []
    with torch.device("meta"), torch.no_grad():
        ae = AutoencoderKL(get_preset("autoencoder", preset))
        with _recording(calls, "autoencoder", ae):
            z = ae.encode(torch.zeros(1, 3, S, S)).mean
            ae.decode(z)
        C, h, w = z.shape[1:]
        content = ContentUNet(get_preset("content", preset))
        with _recording(calls, "content", content):
            content(torch.zeros(1, C, h, w), torch.zeros(1))
        motion = MotionUNet(get_preset("motion", preset))
        with _recording(calls, "motion", motion):
            motion(torch.zeros(1, T, C, h, w), torch.zeros(1, T), torch.zeros(1, T, dtype=torch.bool),
                   torch.arange(T, dtype=torch.float32)[None])
    return calls


def unique_cases(calls: list[dict], preset: str) -> dict[str, list[dict]]:
    """The distinct per-sample shapes, each with a unique label, how often one forward pass calls
    it, and the training batch (clips or frames) of the largest config that uses it.

    attention: {"label", "kind" (spatial|temporal|spacetime), "shape" [B, H, N, D], "batch", "calls", "models",
                "train_dim0" (B at the training batch: frames x heads' batch or clips x positions)}
    group_norm: {"label", "shape" [BT, C, *spatial], "groups", "modulated", "act", "batch", "calls", "models",
                 "train_dim0" (B*T at the training batch)}
    """
    batches = PRESET_DATA[preset]["batch"]
    out: dict[str, dict] = {"attention": {}, "group_norm": {}}
    for c in calls:
        if c["op"] == "attention":
            B, H, N, D = c["shape"]
            kind = c["kind"]
            if kind == "temporal":  # B = h*w positions of one clip
                side = math.isqrt(B)
                label = f"temporal T={N} " + (f"{side}x{side}" if side * side == B else f"{B}pos") + f" h{H}"
            else:  # spatial: B = frames of one sample; spacetime: B = clips
                side = math.isqrt(N)
                label = f"{kind} " + (f"{side}x{side}" if side * side == N else f"N={N}") + f" h{H}"
            if D != 64:
                label += f" d{D}"
            case = out["attention"].setdefault(label, {"label": label, "kind": kind, "shape": [B, H, N, D],
                                                       "batch": 0, "calls": 0, "models": []})
        else:
            label = (f"C={c['shape'][1]} {'x'.join(map(str, c['shape'][2:]))} G{c['groups']}"
                     + (" mod" if c["modulated"] else "") + (" silu" if c["act"] == "silu" else ""))
            case = out["group_norm"].setdefault(label, {"label": label, "shape": list(c["shape"]),
                                                        "groups": c["groups"], "modulated": c["modulated"],
                                                        "act": c["act"], "batch": 0, "calls": 0, "models": []})
        case["calls"] += 1
        case["batch"] = max(case["batch"], batches[c["model"]])
        case["train_dim0"] = max(case.get("train_dim0", 0), c["shape"][0] * batches[c["model"]])
        if c["model"] not in case["models"]:
            case["models"].append(c["model"])
    return {op: list(cases.values()) for op, cases in out.items()}


def bench_shapes(cases: dict[str, list[dict]], max_attention: int | None = None,
                 max_group_norm: int | None = None, batch_scale: float = 1.0) -> dict:
    """The content of a `vidm bench kernels --shapes` file: the cases at their training batch
    (times batch_scale, at least 1); attention cases ordered by work per forward pass (the
    spatial N >= 1024 and temporal T=16 ones, which carry the kernel targets, first), GroupNorm
    by bytes per forward pass; at most max_* of each."""
    def dim0(case):
        return max(1, int(round(case["train_dim0"] * batch_scale)))

    def targeted(c):
        return (c["kind"] == "spatial" and c["shape"][2] >= 1024) or (c["kind"] == "temporal" and c["shape"][2] == 16)

    att = sorted(cases["attention"], key=lambda c: (not targeted(c), -c["calls"] * c["shape"][0] * c["shape"][2] ** 2))
    att = att[:max_attention]
    # GroupNorm: the benchmark always times the full fused op (affine + scale/shift + SiLU), so
    # cases are keyed by shape alone; the UNets' (modulated) and the autoencoder's shapes alternate.
    by_shape: dict[tuple, dict] = {}
    for c in cases["group_norm"]:
        if len(c["shape"]) != 4:
            continue
        key = (*c["shape"][1:], c["groups"])
        row = by_shape.setdefault(key, {**c, "calls": 0, "train_dim0": 0, "modulated": False})
        row["calls"] += c["calls"]
        row["train_dim0"] = max(row["train_dim0"], c["train_dim0"])
        row["modulated"] |= c["modulated"]
    order = lambda c: -c["calls"] * math.prod(c["shape"][1:])  # noqa: E731
    mod = sorted((c for c in by_shape.values() if c["modulated"]), key=order)
    plain = sorted((c for c in by_shape.values() if not c["modulated"]), key=order)
    gn = [c for pair in zip(mod, plain) for c in pair] + mod[len(plain):] + plain[len(mod):]
    gn = gn[:max_group_norm]
    return {
        "attention": [[c["label"], dim0(c), *c["shape"][1:]] for c in att],
        "group_norm": [[f"C={c['shape'][1]} {c['shape'][2]}x{c['shape'][3]}" + ("" if c["groups"] == 32 else
                                                                              f" G{c['groups']}"),
                        dim0(c), *c["shape"][1:4], c["groups"]] for c in gn],
    }
