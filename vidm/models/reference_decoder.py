"""Reference-conditioned frame decoding (after LDMVFI's VQ-FIGAN, TLB-VFI and RIFE's IFNet).

The frame is built from the real pixels of one or two reference frames, at the references' own
resolution; the target's latent only steers where those pixels go:

    frame = sum_k w_k * warp(ref_k, flow_k) + w_gen * up(D(z)) + residual

with w = softmax over (ref 0, ref 1, "new content") and D the plain latent decoder. Shapes:

    z        (N, C, h, w)        the target's unscaled latent; the model grid is S = (h*f, w*f)
    x_gen    (N, 3, S)           D(z), the plain decoder's frame
    refs     (N, K, 3, H, W)     K in {1, 2} reference frames in [-1, 1], any H x W
    offsets  (N, K)              reference time minus target time, in frames (signed)
    out      (N, 3, H, W)

Coarse to fine (as IFNet does at 1/16..1/1): a small U-Net at S/4 sees the latent, features
of D(z) and of each reference and local correlation volumes (D(z) against each reference, and
reference against reference, for when the latent is uninformative) and gives the first flows
and blend logits; one shared refinement block then corrects flows, logits and a residual at
S/2 and S on the model grid, then at every octave of the references' own grid up to H x W, each
time looking at the references warped at that level. Flows are fractions of the frame
(`vidm.models.warp`), so they carry across grids of any size and aspect.

With `flow_prior="dis"` an in-between frame starts from the classical flow baseline's answer
(`vidm.models.flow_prior`): its flows and blend logits, at the references' resolution, are the
base of the state at every level and the network learns only the deltas, so the untrained
decoder already matches DIS flow and training only has to beat it.

The decoder is trained with noised and dropped latents (`latent_sigma`, given to the network),
so it learns to match the references itself where the latent is unsure.

The networks look at bilinear warps at every level; the output frame is sampled with the
decoder's kernel (`warp`, config `ref_warp`): bilinear, bicubic, or "adaptive", where the
refinement also predicts a per-pixel, per-reference sharpness s in [0, 1] mixing the two
(`vidm.models.warp.backward_warp`). A bilinear sample between pixels averages them, so every
sub-pixel shift of a still scene comes out blurred, but where the flow is off by a pixel the
blur is the better guess; the network knows which case it is in from how well the references
agree.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidm.errors import ConfigError
from vidm.models.embeddings import zero_module
from vidm.models.flow_prior import PRIORS, dis_prior
from vidm.models.warp import WARP_MODES, backward_warp, level_sizes, resize

# The references' sampling kernel: a fixed one of `WARP_MODES`, or "adaptive": per pixel and
# reference, a learned mix of the two (sharp where the flow is sure, smooth where it is not).
REF_WARPS = (*WARP_MODES, "adaptive")

SLOTS = 2  # reference slots; a missing reference gets zero weight
HIDDEN = 16  # channels of the context carried from level to level
NEG = -1.0e4  # blend logit of a missing reference (finite: bf16-safe)
# Blend logits are soft-bounded to +-LOGIT_BOUND: an unbounded logit can run away and saturate the
# softmax, after which no gradient reaches it (a training run collapsed that way). 60 still lets a
# weight reach exactly 1.0 in float32 (e^-120 underflows).
LOGIT_BOUND = 60.0


def bound_logits(logits: torch.Tensor) -> torch.Tensor:
    return LOGIT_BOUND * torch.tanh(logits / LOGIT_BOUND)


def correlation(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Local cost volume: (N, c, h, w) x2 -> (N, (2r+1)^2, h, w), cosine similarity of a's
    feature at p with b's at p + d for every |d| <= r (zeros past the border)."""
    N, c, h, w = a.shape
    a = F.normalize(a.float(), dim=1)
    b = F.normalize(b.float(), dim=1)
    d = 2 * radius + 1
    cols = F.unfold(b, d, padding=radius).view(N, c, d * d, h, w)
    return (cols * a.unsqueeze(2)).sum(1)


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU())


class FeatureEncoder(nn.Module):
    """Image (N, 3, S) -> features (N, w, S/4)."""

    def __init__(self, width: int):
        super().__init__()
        half = max(8, width // 2)
        self.layers = nn.Sequential(conv(3, half, 2), conv(half, half), conv(half, width, 2),
                                    nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CoarseEstimator(nn.Module):
    """A three-level U-Net at S/4 -> first flows (4), blend logits (3) and context (HIDDEN)."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        c1, c2, c3 = 2 * width, 3 * width, 4 * width
        self.inp = nn.Sequential(conv(cin, c1), conv(c1, c1))
        self.down1 = nn.Sequential(conv(c1, c2, 2), conv(c2, c2))
        self.down2 = nn.Sequential(conv(c2, c3, 2), conv(c3, c3), conv(c3, c3))
        self.up2 = conv(c3, c2)
        self.mid1 = conv(c2, c2)
        self.up1 = conv(c2, c1)
        self.mid0 = conv(c1, c1)
        self.head = zero_module(nn.Conv2d(c1, 4 + 3 + HIDDEN, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.inp(x)
        h1 = self.down1(h0)
        h2 = self.down2(h1)
        u1 = self.mid1(self.up2(resize(h2, h1.shape[-2:])) + h1)
        u0 = self.mid0(self.up1(resize(u1, h0.shape[-2:])) + h0)
        return self.head(u0)


class RefineBlock(nn.Module):
    """One level's correction, shared by all levels (so any number of octaves works): works at
    half the level's resolution, outputs at the level's (deltas of flows in level pixels,
    logits, residual, context)."""

    IN = 3 * SLOTS * 2 + 3 + 3 + 2 * SLOTS + 3 + SLOTS + HIDDEN + 3
    OUT = 2 * SLOTS + 3 + 3 + HIDDEN

    def __init__(self, width: int, adaptive: bool = False):
        super().__init__()
        c = width + width // 2
        self.body = nn.Sequential(conv(self.IN, c, 2), conv(c, c), conv(c, c), conv(c, c))
        self.out = zero_module(nn.ConvTranspose2d(c, self.OUT, 4, stride=2, padding=1))
        # warp="adaptive": deltas of each slot's sharpness logit, a head of its own so that a
        # bilinear or bicubic decoder's weights load unchanged into an adaptive one
        self.sharp = zero_module(nn.ConvTranspose2d(c, SLOTS, 4, stride=2, padding=1)) if adaptive else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        crop = lambda y: y[..., : x.shape[-2], : x.shape[-1]]  # noqa: E731  odd sizes: the extra row
        return crop(self.out(h)), (crop(self.sharp(h)) if self.sharp is not None else None)


class ReferenceDecoder(nn.Module):
    def __init__(self, latent_channels: int, width: int, corr_radius: int, flow_prior: str = "none",
                 warp: str = "bilinear"):
        super().__init__()
        if flow_prior not in PRIORS:
            raise ConfigError(f"ReferenceDecoder flow_prior: expected one of {PRIORS}, got {flow_prior!r}")
        if warp not in REF_WARPS:
            raise ConfigError(f"ReferenceDecoder warp: expected one of {REF_WARPS}, got {warp!r}")
        self.warp = warp
        self.radius = corr_radius
        self.flow_prior = flow_prior
        d_gen = (2 * corr_radius + 1) ** 2
        d_pair = (2 * corr_radius + 3) ** 2  # refs are further apart than ref and target
        cin = latent_channels + 1 + width + 3 + SLOTS * (width + d_gen + 3 + 2) + d_pair
        if flow_prior != "none":
            cin += 2 * SLOTS + 3  # the prior's flows and logits at the coarse grid
        self.features = FeatureEncoder(width)
        self.coarse = CoarseEstimator(cin, width)
        self.refine = RefineBlock(width, adaptive=warp == "adaptive")

    def forward(self, z: torch.Tensor, x_gen: torch.Tensor, refs: torch.Tensor, offsets: torch.Tensor,
                present: torch.Tensor, latent_sigma: torch.Tensor, return_logits: bool = False):
        """refs (N, SLOTS, 3, H, W), offsets / present (N, SLOTS) (present 1 or 0; an absent
        slot's pixels are ignored), latent_sigma (N,) -> (N, 3, H, W) (and the network's share of
        the final blend logits (N, 3, H, W), without the prior, with return_logits, for a
        training penalty).

        The state carried across levels (flows, logits, residual, context) and the warps stay in
        float32 under autocast: bf16 coordinates would be off by a pixel or two at 256 px."""
        N, _, _, H, W = refs.shape
        S = tuple(x_gen.shape[-2:])
        dt = x_gen.dtype
        present = present.to(dt)
        refs = refs.to(dt) * present.view(N, SLOTS, 1, 1, 1)
        tau = (offsets.to(dt) / 8).clamp(-4, 4) * present  # (N, SLOTS)
        conf = (latent_sigma.to(dt) / (1 + latent_sigma.to(dt))).view(N, 1, 1, 1)  # 0 sure .. 1 unknown

        # Coarse level on the model grid (S/4).
        ref_s = [resize(refs[:, k], S) for k in range(SLOTS)]  # (N, 3, S) each
        f_gen = self.features(x_gen)
        f_ref = [self.features(r) for r in ref_s]
        g = tuple(f_gen.shape[-2:])
        const = lambda v: v.view(N, 1, 1, 1).expand(N, 1, *g)  # noqa: E731
        parts = [resize(z.to(dt), g), conf.expand(N, 1, *g), f_gen, resize(x_gen, g)]
        for k in range(SLOTS):
            parts += [f_ref[k], correlation(f_gen, f_ref[k], self.radius).to(dt), resize(ref_s[k], g),
                      const(tau[:, k]), const(present[:, k])]
        parts.append(correlation(f_ref[0], f_ref[1], self.radius + 1).to(dt) * const(present[:, 1]))
        if self.flow_prior == "dis":
            p_flow, p_logits = dis_prior(refs.float(), offsets, present)
            px_g = torch.tensor([g[1], g[0]], device=z.device, dtype=torch.float32).repeat(SLOTS).view(1, -1, 1, 1)
            parts += [(resize(p_flow, g) * px_g / 8).to(dt), (resize(p_logits, g) / 8).to(dt)]
        else:
            p_flow = p_logits = None
        y = self.coarse(torch.cat(parts, 1)).float()
        # flow / logits below are the network's part; the prior (if any) is added at each level
        flow, logits, hidden = y.split([2 * SLOTS, 3, HIDDEN], 1)
        residual = y.new_zeros(N, 3, *g)
        sharp = y.new_zeros(N, SLOTS, *g) if self.warp == "adaptive" else None  # sharpness logits
        pres = present.float()
        mask = torch.cat([(pres - 1) * -NEG, pres.new_zeros(N, 1)], 1).view(N, 3, 1, 1)
        refs = refs.float()
        x_gen = x_gen.float()

        levels = [(max(1, S[0] // 2), max(1, S[1] // 2)), S] + level_sizes(H, W, max(S))
        pyramid: dict[tuple[int, int], torch.Tensor] = {}

        def refs_at(size):  # (N, SLOTS, 3, size) references at a level
            if size not in pyramid:
                pyramid[size] = torch.stack([resize(refs[:, k], size) for k in range(SLOTS)], 1)
            return pyramid[size]

        for size in levels:
            flow, logits = resize(flow, size), resize(logits, size)
            hidden, residual = resize(hidden, size), resize(residual, size)
            sharp = None if sharp is None else resize(sharp, size)
            r = refs_at(size)
            gen = resize(x_gen, size)
            px = torch.tensor([size[1], size[0]], device=z.device, dtype=torch.float32).repeat(SLOTS).view(1, -1, 1, 1)
            # the state at this level: the network's part + the prior's (resized once per level)
            pf, pl = (0.0, 0.0) if p_flow is None else (resize(p_flow, size), resize(p_logits, size))
            f_all, l_all = flow + pf, bound_logits(logits + pl)
            warped = [backward_warp(r[:, k], f_all[:, 2 * k:2 * k + 2]) for k in range(SLOTS)]
            comp = self._compose(warped, gen, l_all + mask, residual)
            inp = torch.cat([r.flatten(1, 2), *warped, comp, gen, f_all * px / 8, l_all / 8,
                             pres.view(N, SLOTS, 1, 1).expand(N, SLOTS, *size), hidden, residual], 1)
            d, d_sharp = self.refine(inp)
            d = d.float()
            sharp = None if sharp is None else sharp + d_sharp.float()
            d_flow, d_logits, d_res, d_hidden = d.split([2 * SLOTS, 3, 3, HIDDEN], 1)
            flow = flow + d_flow / px
            logits, residual, hidden = logits + d_logits, residual + d_res, hidden + d_hidden
        # the frame itself: only the finest level's state is composed, with the output kernel
        f_all, l_all = flow + pf, bound_logits(logits + pl)
        out = self._compose(self._warp(r, f_all, sharp), gen, l_all + mask, residual)
        return (out, bound_logits(logits)) if return_logits else out  # the penalty sees the network's part

    def _warp(self, refs: torch.Tensor, flows: torch.Tensor, sharp: torch.Tensor | None) -> list[torch.Tensor]:
        """The output frame's warps, with the decoder's kernel (the networks look at bilinear
        warps, the cheapest: the kernel only changes how the frame is sampled). refs (N, SLOTS,
        3, h, w), flows (N, 2 * SLOTS, h, w), sharp (N, SLOTS, h, w) logits or None -> each
        slot's warped reference."""
        mode = self.warp if sharp is None else "bicubic"  # adaptive: bicubic taps, mixed per pixel
        return [backward_warp(refs[:, k], flows[:, 2 * k:2 * k + 2], mode,
                              None if sharp is None else torch.sigmoid(sharp[:, k:k + 1])) for k in range(SLOTS)]

    @staticmethod
    def _compose(warped: list[torch.Tensor], gen: torch.Tensor, logits: torch.Tensor,
                 residual: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(logits.float(), dim=1)  # (N, 3, h, w)
        return w[:, 0:1] * warped[0] + w[:, 1:2] * warped[1] + w[:, 2:3] * gen + residual


__all__ = ["ReferenceDecoder", "correlation", "SLOTS"]
