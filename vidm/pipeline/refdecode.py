"""Video-aware decoding with a reference autoencoder: which real frames each output frame is
built from, and the decode itself.

The rule (DESIGN "Data flow"): an in-between frame is decoded with its nearest given frames on
both sides, at their original resolution; a frame past the last given one (prediction,
generation) with the frame before it, as decoded, and the first frame (the content anchor).
The diffusion runs at the model's latent size; the output has the references' size. Times are
output-frame positions, so a reference's offset is its position minus the target's.
"""

from __future__ import annotations

import torch


def reference_plan(n: int, given: list[int]) -> list[tuple[int, list[int]]]:
    """Decoding order for the n - len(given) frames not given: [(position, reference positions)].

    Between given frames: [nearest given before, nearest given after]. Past the last given:
    [position - 1, first frame] (just [0] for position 1; the first frame is decoded plainly
    when nothing is given). Before the first given: [nearest given after]."""
    given = sorted(set(given))
    if any(not 0 <= g < n for g in given):
        raise ValueError(f"given positions {given} must lie in 0..{n - 1}")
    order: list[tuple[int, list[int]]] = []
    if not given:
        order.append((0, []))
        given = [0]
        done = {0}
    else:
        done = set(given)
    first, last = given[0], given[-1]
    for p in range(n):
        if p in done:
            continue
        before = [g for g in given if g < p]
        after = [g for g in given if g > p]
        if before and after:
            order.append((p, [before[-1], after[0]]))
        elif after:
            order.append((p, [after[0]]))
    for p in range(last + 1, n):
        if p not in done:
            order.append((p, [p - 1] if p - 1 == first else [p - 1, first]))
    return order


@torch.no_grad()
def decode_with_references(ae, z: torch.Tensor, given: dict[int, torch.Tensor], latent_sigma: float,
                           autocast, chunk: int = 8) -> dict[int, torch.Tensor]:
    """Decode every frame not in `given`.

    z (B, n, C, h, w) scaled latents; given {position: (B, 3, H, W) float in [-1, 1]} at the
    output size (empty for generation: frame 0 decodes plainly at the model size) ->
    {position: (B, 3, H, W) in [-1, 1]} for the frames not given. Frames whose references are
    all given are decoded together, `chunk` at a time; the others one after another.
    """
    B, n = z.shape[:2]
    dev = next(ae.parameters()).device
    scale = ae.config.latent_scale
    out: dict[int, torch.Tensor] = {}
    frames = dict(given)

    def run(items: list[tuple[int, list[int]]]) -> None:
        k = len(items[0][1])
        zs = torch.cat([z[:, p] for p, _ in items]).to(dev, torch.float32) / scale  # (len*B, C, h, w)
        if k == 0:
            with autocast():
                x = ae.decode(zs).float()
        else:
            refs = torch.stack([torch.cat([frames[r][:, None] for r in rs], 1) for _, rs in items])  # (L, B, k, ...)
            refs = refs.flatten(0, 1).to(dev)
            offs = torch.tensor([[float(r - p) for r in rs] for p, rs in items], device=dev)
            offs = offs.repeat_interleave(B, 0)
            with autocast():
                x = ae.decode(zs, refs, offs, latent_sigma=latent_sigma).float()
        x = x.clamp(-1, 1)
        for i, (p, _) in enumerate(items):
            out[p] = frames[p] = x[i * B:(i + 1) * B].to(z.device)

    order = reference_plan(n, sorted(given))
    batchable = [it for it in order if it[1] and all(r in given for r in it[1])]
    for k in sorted({len(rs) for _, rs in batchable}):  # one reference count per decode call
        same = [it for it in batchable if len(it[1]) == k]
        for i in range(0, len(same), chunk):
            run(same[i:i + chunk])
    for it in order:
        if it not in batchable:
            run([it])
    return out


__all__ = ["reference_plan", "decode_with_references"]
