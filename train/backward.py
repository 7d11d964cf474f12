"""Fine-tune a backward-motion model from a forward one (Generative Inbetweening, Wang et al.
2024): the model that dual-directional sampling runs from the last key frame.

    python -m train.backward --config configs/backward/tiny.yaml run.init_from=runs/motion-tiny/model

`run.init_from` (required) is the forward motion model. Two copies of it are built: the forward
model, frozen, and the backward model, of which only the value and output projections (to_v,
to_out: weights and biases) of every temporal attention layer train; everything else stays
exactly as it was. Per example, from the same latent windows as the motion trainer:

    x0 (B, T, C, h, w)   a window in forward order, times (B, T) its frame positions
    sigma, noise         one EDM sigma per window (ln sigma ~ N(P_mean, P_std^2)), one noise tensor
    forward model        runs on x0 + sigma * noise (forward order), its first `known_frames` frames
                         clean (given) and its first frame as anchor; its temporal attention maps
                         P_f (B*h'*w', heads, T, T) per layer are recorded (no gradient)
    backward model       runs on the same noisy window reversed in time, flip(x0 + sigma * noise),
                         at the same sigma, its first `known_frames` frames (the original last ones)
                         clean and its first frame (the original last frame) as anchor, with times
                         t_last - t (reversed, starting at 0); every temporal attention layer uses
                         P_f rotated by 180 degrees (P_b[i, j] = P_f[T-1-i, T-1-j]) in place of its
                         own softmax(q k^T), its own to_v and to_out applied
    loss                 the EDM loss of the backward model's denoised reversed window against
                         flip(x0), on its unknown frames

Space-time attention blocks (model.spacetime_levels) are frozen like the rest and compute their
own attention on the reversed window: their maps mix space and time, so they are not rotated.

This follows the paper's training script: the forward model sees the same noisy clip in forward
order at the same noise level, conditioned on the clip's first frame, while the fine-tuned copy
sees the reversed clip conditioned on its own first frame (the clip's last). Known frames enter
clean here (RaMViD), where SVD concatenates the condition image instead. With
`condition.p_drop_known` / `p_drop_anchor` both models drop the known frames / the anchor
together, so guidance on the input frames still works with the backward model.

The export (RUN/model) is an ordinary motion model folder (kind "motion") whose training record
also names the forward model's weights (`forward_model`: vidm.models.pretrained.weights_fingerprint):
at sampling time its maps must come from that model. The preview samples backward prediction:
the window's last frame given, the frames before it sampled by the backward model with the maps
of the forward model sampling alongside from the same frame (as the paper's validation does).
"""

from __future__ import annotations

import copy
import sys

import torch

from . import common
from .config import BackwardTrainConfig
from .loop import main as loop_main
from .motion import MotionStage
from vidm.diffusion.bidirectional import reverse_times
from vidm.errors import ConfigError, VidmError
from vidm.models.blocks import temporal_layers

# What the fine-tune trains inside every TemporalAttention layer (weights and biases).
TRAINABLE = ("to_v", "to_out")


def backward_parameter_names(net) -> list[str]:
    """Names of the parameters the backward fine-tune trains: to_v and to_out (weight, bias) of
    every temporal attention layer."""
    return [f"{name}.{proj}.{p}" for name, layer in temporal_layers(net) for proj in TRAINABLE
            for p, _ in getattr(layer, proj).named_parameters()]


def freeze_for_backward(net) -> int:
    """Leave only `backward_parameter_names(net)` trainable; returns how many weights train."""
    names = set(backward_parameter_names(net))
    if not names:
        raise ConfigError("the forward model has no temporal attention layers: nothing for the backward fine-tune "
                          "to train")
    n = 0
    for name, p in net.named_parameters():
        p.requires_grad_(name in names)
        n += p.numel() if name in names else 0
    check_backward_trainable(net)
    return n


def check_backward_trainable(net) -> None:
    """Raise unless exactly the temporal attention's to_v / to_out parameters are trainable."""
    want = set(backward_parameter_names(net))
    have = {n for n, p in net.named_parameters() if p.requires_grad}
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        raise ConfigError(f"backward fine-tune: only the temporal attention's to_v and to_out may train "
                          f"({'also trainable: ' + extra[0] if extra else 'frozen: ' + missing[0]})")


def reverse_window(x: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The window reversed in time: x (B, T, ...) -> x[:, ::-1]; times (B, T) -> t_last - t
    reversed, so the reversed window starts at 0 with the same spacings."""
    return x.flip(1), reverse_times(times)


def first_frame_conditioning(batch: int, T: int, known_frames: int, p_drop_known: float, p_drop_anchor: float,
                             generator: torch.Generator | None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(known (B, T) bool: the first `known_frames` frames, none where dropped; anchor_mask (B,)
    bool: False where the anchor is dropped). The same for both directions of a window."""
    gen_device = generator.device if generator is not None else "cpu"
    draw = torch.rand(batch, 2, generator=generator, device=gen_device).to(device)
    known = torch.zeros(batch, T, dtype=torch.bool, device=device)
    known[:, :known_frames] = True
    known &= (draw[:, 0] >= p_drop_known)[:, None]
    return known, draw[:, 1] >= p_drop_anchor


def paired_denoiser(forward_denoiser, backward_denoiser, n: int):
    """denoise(x, sigma, times, anchor, anchor_mask=None) for a batch of 2n windows: the first n
    go to the forward model, whose temporal attention maps are recorded, the last n to the
    backward model, fed those maps rotated by 180 degrees (window i of one half pairs with
    window i of the other)."""
    from vidm.models.temporal_maps import TemporalMaps

    def denoise(x, sigma, times, anchor, anchor_mask=None):
        halves = [slice(0, n), slice(n, 2 * n)]
        cond = [{"times": times[s], "anchor": anchor[s],
                 "anchor_mask": None if anchor_mask is None else anchor_mask[s]} for s in halves]
        maps = TemporalMaps.record()
        D_f = forward_denoiser(x[:n], sigma[:n], temporal_maps=maps, **cond[0])
        D_b = backward_denoiser(x[n:], sigma[n:], temporal_maps=maps.rotated(), **cond[1])
        return torch.cat([D_f, D_b])

    return denoise


class BackwardStage(MotionStage):
    name = "backward"
    kind = "motion"  # the exported model is an ordinary motion model
    config_cls = BackwardTrainConfig

    forward_net = None  # the frozen forward model the maps come from

    def setup(self) -> None:
        from vidm.diffusion import get_sampler

        cfg, src = self.cfg, self.src
        forward = load_forward_model(cfg.run.init_from, src)
        check_model_section(cfg.model, forward.config, cfg.run.init_from, src)
        if cfg.run.init_skip:
            raise ConfigError(f"{src}: run.init_skip: the backward model starts as an exact copy of run.init_from; "
                              f"leave it empty")
        if cfg.run.trainable:
            raise ConfigError(f"{src}: run.trainable: the backward fine-tune trains exactly the temporal attention's "
                              f"to_v and to_out; leave it empty")
        T, c = cfg.data.num_frames, cfg.condition
        if T < 2:
            raise ConfigError(f"{src}: data.num_frames must be >= 2 for the backward model, got {T}")
        if not 1 <= c.known_frames <= T - 1:
            raise ConfigError(f"{src}: condition.known_frames must be 1 to data.num_frames - 1 = {T - 1}, "
                              f"got {c.known_frames}")
        for key in ("p_drop_known", "p_drop_anchor"):
            if not 0.0 <= getattr(c, key) <= 1.0:
                raise ConfigError(f"{src}: condition.{key} must be in [0, 1], got {getattr(c, key)}")
        try:
            get_sampler(cfg.diffusion.sampler)
        except VidmError as e:
            raise ConfigError(f"{src}: diffusion.sampler: {e}") from None
        latent_shape = self.setup_latent_source(T)
        common.check_latent_shape(forward.config, latent_shape, src)
        self.latent_shape = latent_shape
        check_forward_record(forward.training_record, self.latents_from, cfg, src)
        from vidm.models.pretrained import weights_fingerprint

        self.forward_fingerprint = weights_fingerprint(forward)
        self.forward_net = forward.to(self.device).eval().requires_grad_(False)
        self.net = copy.deepcopy(self.forward_net).train()
        self.net.training_record = None
        n = freeze_for_backward(self.net)
        if self.accelerator.is_main_process:
            print(f"train.backward: {n:,} of {self.net.num_parameters():,} parameters train (to_v, to_out of "
                  f"{len(temporal_layers(self.net))} temporal attention layers), the rest are frozen", file=sys.stderr)

    def training_record(self) -> dict:
        """The motion record (window, stride, max_span, ...) plus the forward model's weights
        fingerprint (`forward_model`)."""
        return {**super().training_record(), "forward_model": self.forward_fingerprint}

    def forward_denoiser(self):
        return self.denoiser(self.forward_net)

    @torch.no_grad()
    def forward_maps(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, known: torch.Tensor,
                     times: torch.Tensor, anchor_mask: torch.Tensor):
        """The forward model's temporal attention maps (a recorded TemporalMaps) on the window x0
        (B, T, C, h, w) in forward order noised to x0 + sigma * noise (sigma (B,)), its known
        frames (B, T) clean, its first frame as anchor."""
        from vidm.models.temporal_maps import TemporalMaps

        kv = known[:, :, None, None, None]
        x_noisy = torch.where(kv, x0, x0 + sigma.view(-1, 1, 1, 1, 1) * noise)
        sigma_in = torch.where(known, torch.zeros_like(sigma[:, None]), sigma[:, None])  # (B, T)
        maps = TemporalMaps.record()
        self.forward_denoiser()(x_noisy, sigma_in, times=times, anchor=x0[:, 0], anchor_mask=anchor_mask,
                                temporal_maps=maps)
        return maps

    def loss(self, module, batch, generator):
        from vidm.diffusion import edm_loss, randn_like_from, sample_sigma

        d, c = self.cfg.diffusion, self.cfg.condition
        x0, _, times = self.latents_of(batch)  # forward order; the video's first frame (anchor) is not used
        x0 = x0.float()
        B, T = x0.shape[:2]
        known, anchor_mask = first_frame_conditioning(B, T, c.known_frames, c.p_drop_known, c.p_drop_anchor,
                                                      generator, x0.device)
        sigma = sample_sigma(B, generator, d.P_mean, d.P_std, device=x0.device)
        noise = randn_like_from(x0, generator)
        maps = self.forward_maps(x0, noise, sigma, known, times, anchor_mask)
        x_rev, times_rev = reverse_window(x0, times)
        loss = edm_loss(module, x_rev, known, sigma=sigma, noise=noise.flip(1), sigma_data=d.sigma_data,
                        times=times_rev, anchor=x_rev[:, 0], anchor_mask=anchor_mask,
                        temporal_maps=maps.rotated())
        return loss, {"known_frac": float(known.float().mean())}

    def preview(self, net, batch, generator):
        """Backward prediction of held-out windows: the last frame(s) given, the frames before
        them sampled; ground truth above the sample."""
        return [("backward_prediction", "video", self.preview_video(*self.preview_latents(net, batch, generator)))]

    def preview_latents(self, net, batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, sample), each (B, T, C, h, w) in forward order, B = diffusion.num_samples: the
        reversed windows' first `known_frames` frames given; the backward model samples the rest
        (`vidm.diffusion.sample_window`, no guidance) fed the rotated maps of the forward model,
        which samples a forward window from the same given frames in the same batch."""
        from vidm.diffusion import sample_window

        d = self.cfg.diffusion
        x0, _, times = self.latents_of(batch)
        n = min(d.num_samples, x0.shape[0])
        x_rev, times_rev = reverse_window(x0[:n].float(), times[:n])
        known = torch.zeros(x_rev.shape[:2], dtype=torch.bool, device=x_rev.device)
        known[:, :self.cfg.condition.known_frames] = True
        pair = lambda t: torch.cat([t, t])  # noqa: E731  forward half, backward half
        denoise = paired_denoiser(self.forward_denoiser(), self.denoiser(net), n)
        z = sample_window(denoise, pair(x_rev), pair(known), self.sigmas(), d.sampler, generator,
                          cond={"times": pair(times_rev), "anchor": pair(x_rev[:, 0])},
                          autocast=self.accelerator.autocast)
        return x0[:n], z[n:].flip(1)


def load_forward_model(path: str | None, src: str):
    """The forward motion model of run.init_from, or a one-line ConfigError."""
    from vidm.models.pretrained import load_pretrained

    if not path:
        raise ConfigError(f"{src}: run.init_from is required: the forward motion model folder to fine-tune "
                          f"(e.g. run.init_from=runs/motion-tiny/model)")
    try:
        model = load_pretrained(path)
    except VidmError as e:
        raise ConfigError(f"{src}: run.init_from: {e}") from None
    if model.config_class.kind != "motion":
        raise ConfigError(f"{src}: run.init_from: {path} holds a {model.config_class.kind} model, not a motion model")
    return model


def check_model_section(section: dict, config, path: str, src: str) -> None:
    """The `model` section of a backward config only names the preset of the forward model (its
    architecture is the forward model's): anything else, or another preset, is a ConfigError."""
    extra = sorted(k for k in section if k != "preset")
    if extra:
        raise ConfigError(f"{src}: model.{extra[0]}: the backward model is a copy of run.init_from, whose config "
                          f"it keeps; the model section may only name its preset")
    preset = section.get("preset") or ""
    if preset != config.preset:
        raise ConfigError(f"{src}: model.preset is {preset or None!r}, but run.init_from ({path}) holds a motion model "
                          f"of preset {config.preset or None!r}; use that preset's config or model.preset="
                          f"{config.preset or 'null'}")


def check_forward_record(record: dict | None, latents_from: dict, cfg, src: str) -> None:
    """The forward model must be one (not a backward model), and the backward model must be
    trained as it was: on the same latents (scale, autoencoder, frame size), with the same
    sigma_data, window and time span, as far as the forward model's training record says."""
    if not record:
        return
    if record.get("stage") == "backward":
        raise ConfigError(f"{src}: run.init_from holds a backward-motion model (its training record says stage "
                          f"'backward'); give the forward motion model it was made from")
    d = cfg.data
    stride_max = max(d.stride) if isinstance(d.stride, (list, tuple)) else d.stride
    ours = {"sigma_data": (cfg.diffusion.sigma_data, "diffusion.sigma_data"),
            "size": (latents_from.get("size"), "the latents' frame size"),
            "latent_scale": (latents_from.get("latent_scale"), "the latents' scale"),
            "autoencoder": (latents_from.get("autoencoder"), "the latents' autoencoder"),
            "window": (d.num_frames, "data.num_frames"),
            "max_span": (float((d.num_frames - 1) * stride_max), "(data.num_frames - 1) x the largest data.stride")}
    for key, (mine, what) in ours.items():
        theirs = record.get(key)
        if theirs is None or mine is None:
            continue
        same = (abs(float(theirs) - float(mine)) <= 1e-6 * max(1.0, abs(float(theirs)))
                if isinstance(theirs, (int, float)) and isinstance(mine, (int, float)) else theirs == mine)
        if not same:
            raise ConfigError(f"{src}: run.init_from: the forward model was trained with {key} {theirs!r}, this run "
                              f"has {mine!r} ({what}); the backward model must be trained as its forward model was")


def main(argv: list[str] | None = None) -> int:
    return loop_main(BackwardStage, argv)


if __name__ == "__main__":
    sys.exit(main())
