"""`VideoPipeline`: autoencoder + content model + motion model (+ optional stages, vidm.stages),
and what users do with them.

    pipe = VideoPipeline.from_pretrained("runs/pipeline")          # or None: the bundled model
    videos = pipe.generate(num_frames=32, num_videos=2, seed=0)     # uint8 (2, 32, H, W, 3)
    mids = pipe.interpolate(a, b, num_frames=7)                     # uint8 (1, 7, H, W, 3)
    dual = pipe.interpolate(a, b, strategy="time-reversal")         # or "bidirectional" (backward stage)
    sharp = pipe.interpolate(a, b, cascade=True)                    # base, then the upsampler stage (VIDIM)
    fast = pipe.interpolate_video(frames, factor=4)                 # uint8 (1, (N-1)*4+1, H, W, 3)
    more = pipe.predict(frames, num_future=16)                      # uint8 (1, 16, H, W, 3)

Frames in and out are uint8 (H, W, 3) arrays. The diffusion runs at the models' square
resolution; with a reference autoencoder (`model.references=2`) every output frame is built
from the real pixels of its nearest given frames at their own size (`vidm.pipeline.refdecode`),
otherwise inputs of another size are resized to the model size and the results resized back. All sampling happens on latents:
the content model makes frame 0 (VIDM), the motion model makes the other frames window by
window with the known frames clean (RaMViD), the first frame as content anchor, and guidance
on the input frames (VIDIM). The same seed on the same device gives the same frames.

Interpolation strategies (`strategy=`, vidm.pipeline.options.STRATEGIES) say how in-between
windows are sampled: "infill" (default) conditions the motion model on the known frames on both
sides; "bidirectional" fuses at every solver step a forward estimate from the start with the
`backward` stage's estimate from the end on the reversed window, fed the forward model's
temporal attention maps rotated by 180 degrees (Generative Inbetweening); "time-reversal" does
the same fusion with the motion model in both directions and its own attention (TRF). Every
strategy starts from the same point (`infill_init`: the splat start or pure noise) and uses the
same sampler, guidance (per direction) and `reinject` noise re-injections; windows with nothing
to interpolate between (generation, prediction) are never dual-directional.

With an `upsampler` stage, `cascade=True` (VIDIM) runs the upsampler after the base windows:
the same windows again at its larger latent size, the given frames encoded at that size as its
known frames and the base video as its noise-augmented condition (`_upsample`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidm import stages as registry
from vidm.diffusion import Denoiser, get_sigmas_karras, sampling
from vidm.diffusion.splat import brackets, splat_inbetweens, splat_window_mean
from vidm.bundled import DEFAULT_MODEL, PRETRAINED_ROOT
from vidm.errors import CheckpointError, ConfigError, NumericalError, ShapeError
from vidm.models import AutoencoderKL, ContentUNet, MotionUNet, autocast_dtype
from vidm.models.autoencoder import decode_frames, encode_frames
from vidm.models.blocks import temporal_layers
from vidm.pipeline import plan
from vidm.pipeline.config import PipelineConfig
from vidm.pipeline.options import STRATEGIES, SamplingOptions
from vidm.pipeline.refdecode import decode_with_references
from vidm.serialization import atomic_write_dir

DTYPES = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


CHUNK = 64  # frames encoded / decoded per autoencoder call from the pipeline


def bundled_models() -> list[str]:
    """Names of the pipelines shipped inside the package (`--model NAME`)."""
    return sorted(p.parent.name for p in PRETRAINED_ROOT.glob("*/pipeline.json"))


def default_model_dir() -> Path:
    """The bundled pretrained pipeline shipped inside the package."""
    return PRETRAINED_ROOT / DEFAULT_MODEL


def resolve_model(path: str | os.PathLike | None) -> Path:
    """--model: None (the default bundled pipeline), a folder, or a bundled pipeline's name."""
    if path is None:
        return default_model_dir()
    p = Path(path)
    if not p.exists() and str(path) in bundled_models():
        return PRETRAINED_ROOT / str(path)
    return p


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested, but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device} requested, but there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {str(device)!r}; use cpu, cuda, cuda:N or auto")
    return device


class VideoPipeline:
    """Holds one model per stage (vidm.stages: the required autoencoder, content and motion, and
    optional ones in `stages`, {name: model}) and samples videos from them (see the module
    docstring). `pipe.stages` maps every stage present to its model, in registry order."""

    def __init__(self, autoencoder: AutoencoderKL, content: ContentUNet, motion: MotionUNet,
                 config: PipelineConfig | None = None, device=None, dtype: str = "auto",
                 stages: dict[str, torch.nn.Module] | None = None):
        self.config = config or PipelineConfig()
        self.device = resolve_device(device)
        if dtype == "auto":
            self.autocast_dtype = autocast_dtype(self.device)
        elif dtype in DTYPES:
            self.autocast_dtype = DTYPES[dtype]
        else:
            raise ConfigError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
        models = _stage_models({"autoencoder": autoencoder, "content": content, "motion": motion, **(stages or {})})
        self.stages = {name: m.to(self.device).eval() for name, m in models.items()}
        self._check_compatible()
        self.content_denoiser = Denoiser(self.content, self.config.sigma_data)
        self.motion_denoiser = Denoiser(self.motion, self.config.sigma_data)
        self.backward_denoiser = Denoiser(self.stages["backward"], self.config.sigma_data) \
            if "backward" in self.stages else None
        self._backward_checked = False  # the backward stage found to fit the motion model (checked once)
        self.upsampler_denoiser = Denoiser(self.stages["upsampler"], self.config.sigma_data) \
            if "upsampler" in self.stages else None

    @property
    def autoencoder(self) -> AutoencoderKL:
        return self.stages["autoencoder"]

    @property
    def content(self) -> ContentUNet:
        return self.stages["content"]

    @property
    def motion(self) -> MotionUNet:
        return self.stages["motion"]

    def has_stage(self, name: str) -> bool:
        return name in self.stages

    def check_strategy(self, strategy: str) -> str:
        """`strategy` if this pipeline can interpolate with it, else a one-line ConfigError (an
        unknown name; "bidirectional" without a backward stage, or with one whose temporal
        attention layers are not the motion model's, so the rotated maps cannot fit)."""
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown interpolation strategy {strategy!r}; use {', '.join(STRATEGIES)}")
        if strategy == "bidirectional":
            if not self.has_stage("backward"):
                raise ConfigError("strategy 'bidirectional' needs a backward-motion model, and this pipeline has no "
                                  "backward stage (pack one with `vidm pack ... --backward DIR`); use strategy "
                                  "'time-reversal' to run the motion model in both directions instead")
            if not self._backward_checked:  # once per pipeline: every window of every call asks
                self._check_backward()
                self._backward_checked = True
        return strategy

    def check_cascade(self, cascade: bool) -> bool:
        """`cascade`, or a one-line ConfigError when it is asked of a pipeline with no upsampler."""
        if cascade and not self.has_stage("upsampler"):
            raise ConfigError("--cascade needs a cascade upsampler, and this pipeline has no upsampler stage (train one "
                              "with `vidm train upsampler`, pack it with `vidm pack ... --upsampler DIR`)")
        return bool(cascade)

    @property
    def upsampler_size(self) -> int | None:
        """Frame size of the upsampler stage (the pipeline size times its scale), None without one."""
        up = self.stages.get("upsampler")
        return None if up is None else self.config.size * up.config.low_res_scale

    def _check_backward(self) -> None:
        """A ConfigError when the backward stage cannot run on this motion model's rotated maps:
        other temporal attention layers, or a training record naming another forward model
        (`forward_model`, train/backward.py) than this motion model."""
        if _temporal_layers(self.stages["backward"]) != _temporal_layers(self.motion):
            raise ConfigError("the backward stage's temporal attention layers differ from the motion model's: "
                              "it must be a fine-tune of this motion model (it runs on its attention maps)")
        want = (self.stages["backward"].training_record or {}).get("forward_model")
        if want is None:
            return
        from vidm.models.pretrained import weights_fingerprint

        have = weights_fingerprint(self.motion)
        if have != want:
            raise ConfigError(f"the backward stage was fine-tuned against another motion model (forward_model {want}, "
                              f"this pipeline's motion model is {have}); pack it with the motion model it was "
                              f"trained from, or use strategy 'time-reversal'")

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device=None, dtype: str = "auto"):
        """Load a pipeline folder: `pipeline.json` + one subfolder per stage (autoencoder/,
        content/, motion/ always; the optional stages of vidm.stages where present)."""
        path = resolve_model(path)
        if not path.is_dir():
            hint = " (the bundled model is missing from this install; pass --model DIR)" if \
                path == default_model_dir() else f" (bundled models: {', '.join(bundled_models()) or 'none'})"
            raise CheckpointError(f"{path}: model folder not found{hint}")
        config = PipelineConfig.load(path)
        for stage in registry.names(required=True):
            if not (path / stage).is_dir():
                raise CheckpointError(f"{path}: missing the {stage} stage ({path / stage}/)")
        # A folder of a stage this vidm does not know (e.g. packed by a newer one) is refused:
        # sampling without it would silently differ from what the folder was packed for.
        unknown = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.name not in registry.names())
        if unknown:
            raise CheckpointError(f"{path}: unknown stage folder {unknown[0]}/ (stages: "
                                  f"{', '.join(registry.names())}); remove it or use a vidm that knows it")
        models = {s.name: s.model_class().from_pretrained(path / s.name) for s in registry.all_stages()
                  if (path / s.name).is_dir()}
        required = {name: models.pop(name) for name in registry.names(required=True)}  # the constructor's own
        return cls(**required, config=config, device=device, dtype=dtype, stages=models)

    def save_pretrained(self, path: str | os.PathLike, weights_dtype: torch.dtype | None = torch.float16) -> Path:
        """Write the pipeline folder atomically (fp16 weights by default: half the size)."""
        def write(tmp: Path) -> None:
            self.config.save(tmp)
            for name, model in self.stages.items():
                model.save_pretrained(tmp / name, dtype=weights_dtype)
        return atomic_write_dir(path, write)

    def _check_compatible(self) -> None:
        c = self.autoencoder.config.latent_channels
        for name, m in self.stages.items():
            if registry.get(name).latent and m.config.in_channels != c:
                raise CheckpointError(f"the {name} model takes {m.config.in_channels} latent channels, "
                                      f"the autoencoder makes {c}")
        f = self.autoencoder.config.downsample_factor
        if self.config.size % f:
            raise CheckpointError(f"pipeline size {self.config.size} is not divisible by the autoencoder's "
                                  f"downsampling factor {f}")
        if "upsampler" in self.stages and not self.stages["upsampler"].is_upsampler:
            raise CheckpointError("the upsampler stage holds a plain motion model (its config's low_res_scale is 0); "
                                  "train one with `vidm train upsampler`")
        if self.config.window < 3:
            raise CheckpointError(f"pipeline window must be >= 3, got {self.config.window}")
        self.config.validate("pipeline config")

    def set_infill(self, init: str | None = None, sigma: float | None = None) -> None:
        """Override how in-between windows start (`PipelineConfig.infill_init` / `infill_sigma`);
        None keeps the folder's setting. Bad values raise ConfigError and change nothing."""
        import dataclasses

        changed = dataclasses.replace(self.config, **{k: v for k, v in (("infill_init", init),
                                                                          ("infill_sigma", sigma)) if v is not None})
        self.config = changed.validate("--init/--init-sigma")

    # ------------------------------------------------------------------ pixels <-> latents

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_model_frames(self, frames: np.ndarray, size: int | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, S, S) in [-1, 1] at the models' size S (or `size`)."""
        frames = _check_frames(frames)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
        S = self.config.size if size is None else size
        if x.shape[-2:] != (S, S):
            # antialias: downscaling large frames without it aliases thin edges.
            x = torch.nn.functional.interpolate(x, size=(S, S), mode="bicubic", antialias=True,
                                                align_corners=False).clamp(-1, 1)
        return x.to(self.device)

    def from_model_frames(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
        """float (N, 3, S, S) in [-1, 1] -> uint8 (N, H, W, 3), resized to `size` = (H, W) if given.
        Non-finite values (a diverged sampler) are a NumericalError, never black or white frames."""
        x = _check_finite(x.float().cpu())  # on the decoder output itself
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", antialias=True,
                                                align_corners=False)
        return _to_uint8(x).permute(0, 2, 3, 1).numpy()

    @torch.no_grad()
    def encode(self, frames: np.ndarray, size: int | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> scaled latents (N, C, h, w) (posterior means) of the frames at the
        models' size (or `size`), CHUNK frames at a time (a long video never exists as float
        pixels all at once)."""
        frames = _check_frames(frames)
        with self._autocast():
            return torch.cat([encode_frames(self.autoencoder, self.to_model_frames(frames[i:i + CHUNK], size)).float()
                              for i in range(0, len(frames), CHUNK)])

    @property
    def uses_references(self) -> bool:
        """True when the autoencoder builds frames from reference frames' pixels."""
        return self.autoencoder.config.references > 0

    def to_pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1] at their own size, on the device."""
        x = torch.from_numpy(np.ascontiguousarray(_check_frames(frames))).permute(0, 3, 1, 2)
        return (x.float() / 127.5 - 1).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
        """Scaled latents (N, C, h, w) -> uint8 (N, H, W, 3), CHUNK frames at a time."""
        out = []
        for i in range(0, len(latents), CHUNK):
            with self._autocast():
                x = decode_frames(self.autoencoder, latents[i:i + CHUNK].to(self.device))
            out.append(self.from_model_frames(x, size))
        return np.concatenate(out)

    # ------------------------------------------------------------------ sampling pieces

    def _options(self, options: SamplingOptions | None, **given) -> SamplingOptions:
        """`options` (default: all blank) with a method's keyword arguments that are not None
        on top, resolved against pipeline.json (`SamplingOptions.resolve`)."""
        return _merge(options, **given).resolve(self.config)

    def _generator(self, opts: SamplingOptions) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(opts.seed)

    def _sigmas(self, steps: int, sigma_max: float | None = None) -> torch.Tensor:
        """Karras schedule (steps + 1,) float32 from sigma_max (default pipeline.json's) to 0."""
        top = self.config.sigma_max if sigma_max is None else float(sigma_max)
        return get_sigmas_karras(steps, self.config.sigma_min, top, device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def sample_first_frames(self, num: int, generator: torch.Generator, steps: int, sampler: str,
                            bar=None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Content model: `num` first latent frames (num, C, h, w) (`vidm.diffusion.sample_frames`)."""
        cond = {} if class_labels is None else {"class_labels": class_labels.to(self.device)}
        return sampling.sample_frames(self.content_denoiser, (num, *self._latent_shape()), self._sigmas(steps),
                                      sampler, generator, cond, self.device, _bar_callback(bar), self._autocast)

    @torch.no_grad()
    def sample_window(self, x_known: torch.Tensor, known: torch.Tensor, times: torch.Tensor,
                      anchor: torch.Tensor | None, generator: torch.Generator, steps: int, sampler: str,
                      guidance: float, bar=None, init: torch.Tensor | None = None,
                      init_sigma: float | None = None, *, strategy: str = "infill",
                      end_anchor: torch.Tensor | None = None, reinject: int = 0) -> torch.Tensor:
        """Motion model, one window (`vidm.diffusion.sample_window`): x_known (B, T, C, h, w) with
        the known frames in place, known (B, T) bool, times (B, T), anchor (B, C, h, w) ->
        (B, T, C, h, w). With `init` (B, T, C, h, w) the unknown frames start at
        init + init_sigma * noise and the solver runs from init_sigma down (SDEdit-style);
        without, from pure noise at sigma_max. strategy "bidirectional" / "time-reversal": the
        window sampled dual-directionally (`vidm.diffusion.sample_window_dual`, for in-between
        windows), the backward direction anchored on end_anchor (B, C, h, w) (default: the
        window's last frame). reinject: noise re-injections per early step (0 = none)."""
        sigmas = self._sigmas(steps, None if init is None else init_sigma)
        cond = {"times": times, "anchor": anchor}
        if self.check_strategy(strategy) == "infill":
            return sampling.sample_window(self.motion_denoiser, x_known, known, sigmas, sampler, generator, guidance,
                                          cond, init, _bar_callback(bar), self._autocast, reinject=reinject)
        backward = self.backward_denoiser if strategy == "bidirectional" else self.motion_denoiser
        return sampling.sample_window_dual(
            self.motion_denoiser, backward, x_known, known, sigmas, sampler, generator, guidance, cond,
            backward_anchor=x_known[:, -1] if end_anchor is None else end_anchor,
            rotate_maps=strategy == "bidirectional", init=init, callback=_bar_callback(bar), autocast=self._autocast,
            reinject=reinject)

    def _latent_shape(self) -> tuple[int, int, int]:
        f = self.autoencoder.config.downsample_factor
        return self.autoencoder.config.latent_channels, self.config.size // f, self.config.size // f

    def _windows(self, windows: list[list[int]], made: torch.Tensor, B: int):
        """Per window with something to make (`made` (N,) bool read as each is reached, so the
        caller marks what it made): (idx (T,), known (B, T) bool, times (B, T))."""
        for positions in windows:
            idx = torch.tensor(positions, device=self.device)
            known = made[idx].expand(B, -1).clone()
            if bool(known.all()):
                continue
            times = torch.tensor(plan.window_times(positions, self.config.frame_step, self.config.max_span),
                                 device=self.device, dtype=torch.float32).expand(B, -1)
            yield idx, known, times

    def _fill(self, z: torch.Tensor, made: torch.Tensor, windows: list[list[int]], anchor: torch.Tensor,
              generator: torch.Generator, opts: SamplingOptions, bar,
              between: _Between | None = None) -> torch.Tensor:
        """Sample every window in order. z (B, N, C, h, w) latents with made (N,) bool marking the
        frames already there; each window's made frames are its known frames. between: how the
        in-between windows (known frames on both sides of every unknown one) are sampled
        (None: infill, no re-injection)."""
        between = between or _Between()
        for idx, known, times in self._windows(windows, made, z.shape[0]):
            init, how = None, _Between()  # generation / prediction windows: infill, no re-injection
            if brackets(known[0], times[0]) is not None:  # an in-between window
                if self.config.infill_init == "splat":
                    init = splat_window_mean(z[:, idx], known[0], times[0])
                how = between
            out = self.sample_window(z[:, idx], known, times, anchor, generator, opts.steps, opts.sampler,
                                     opts.guidance, bar, init=init, init_sigma=self.config.infill_sigma,
                                     strategy=how.strategy, end_anchor=how.end_anchor, reinject=how.reinject)
            z[:, idx] = out.to(z.dtype)
            made[idx] = True
        return z

    @contextlib.contextmanager
    def _progress(self, total: int, desc: str, progress: bool):
        """A tqdm bar counting solver steps (None when progress is off), closed on exit."""
        if not progress:
            yield None
            return
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=desc, unit="step", leave=False)
        try:
            yield bar
        finally:
            bar.close()

    def _fill_all(self, z, made, windows, opts: SamplingOptions, generator, desc: str, strategy: str = "infill",
                  reinject: int = 0, cascade: dict[int, torch.Tensor] | None = None):
        """`_fill` with the first frame as anchor (the last one for a backward direction) and the
        in-between windows sampled by `strategy`, under a progress bar. cascade: the given
        frames' latents at the upsampler's size {position: (B, C, H', W')}, to run the upsampler
        on the result (`_upsample`, whose latents are returned then); None: the base latents."""
        between = _Between(strategy, z[:, -1].clone() if strategy != "infill" else None, reinject)
        per_window = opts.steps + reinject * sampling.reinjected_steps(self._sigmas(opts.steps), reinject)
        total = (per_window + (opts.steps if cascade is not None else 0)) * len(windows)
        with self._progress(total, desc, opts.progress) as bar:
            z = self._fill(z, made, windows, z[:, 0].clone(), generator, opts, bar, between)
            return z if cascade is None else self._upsample(z, cascade, windows, generator, opts, bar)

    def _upsample(self, z_low: torch.Tensor, given: dict[int, torch.Tensor], windows: list[list[int]],
                  generator: torch.Generator, opts: SamplingOptions, bar=None) -> torch.Tensor:
        """VIDIM's cascade stage: base latents z_low (B, N, C, h, w) -> (B, N, C, k*h, k*w) from the
        upsampler, window by window in the base's order, with the given frames' own latents at
        its size ({position: (B, C, k*h, k*w)}) as known frames (no other conditioning on them)
        and each window's base video, upsampled and noise-augmented at pipeline.json's
        cascade_aug, as its low_res input (`vidm.diffusion.cascade`). Starts from noise."""
        from vidm.diffusion.cascade import low_res_condition
        from vidm.diffusion.noise import randn_from

        k = self.stages["upsampler"].config.low_res_scale
        B, N, C, h, w = z_low.shape
        z = z_low.new_zeros((B, N, C, k * h, k * w))
        made = torch.zeros(N, dtype=torch.bool, device=self.device)
        for p, latent in given.items():
            z[:, p] = latent
            made[p] = True
        level = torch.full((B,), self.config.cascade_aug, device=self.device)
        for idx, known, times in self._windows(windows, made, B):
            noise = randn_from(z[:, idx].shape, generator, self.device)
            cond = {"times": times, "anchor": z[:, 0],
                    "low_res": low_res_condition(z_low[:, idx], k, level, self.config.sigma_data, noise),
                    "aug_level": level}
            out = sampling.sample_window(self.upsampler_denoiser, z[:, idx], known, self._sigmas(opts.steps),
                                         opts.sampler, generator, opts.guidance, cond, None, _bar_callback(bar),
                                         self._autocast)
            z[:, idx] = out.to(z.dtype)
            made[idx] = True
        return z

    def _check_between(self, strategy: str, reinject: int) -> None:
        """ConfigError for a strategy this pipeline cannot use or a bad reinject count."""
        self.check_strategy(strategy)
        sampling.reinjected_steps(self._sigmas(1), reinject)  # checks the count

    # ------------------------------------------------------------------ what users call
    # Each takes the sampling settings as keywords (steps, sampler, guidance, seed, samples,
    # progress; None = pipeline.json's value or the SamplingOptions default) and/or as one
    # `options=SamplingOptions(...)`; keywords that are given win over the options' fields.

    @torch.no_grad()
    def generate(self, num_frames: int = 16, num_videos: int | None = None, seed: int | None = None,
                 steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                 progress: bool | None = None, *, options: SamplingOptions | None = None) -> np.ndarray:
        """Unconditional videos: uint8 (num_videos, num_frames, S, S, 3); num_videos is the
        options' `samples` (default 1)."""
        _check_count("num_frames", num_frames, 1)
        if num_videos is not None:
            _check_count("num_videos", num_videos, 1)
        opts = self._options(options, samples=num_videos, seed=seed, steps=steps, sampler=sampler,
                             guidance=guidance, progress=progress)
        windows = plan.plan_continuation(1, num_frames, self.config.window, self.config.context)
        gen = self._generator(opts)
        with self._progress(opts.steps * (1 + len(windows)), "generate", opts.progress) as bar:
            z0 = self.sample_first_frames(opts.samples, gen, opts.steps, opts.sampler, bar)
            z = z0.new_zeros((opts.samples, num_frames, *z0.shape[1:]))
            z[:, 0] = z0
            made = torch.zeros(num_frames, dtype=torch.bool, device=self.device)
            made[0] = True
            z = self._fill(z, made, windows, z0, gen, opts, bar)
        return self._decode_videos(z, given={})

    @torch.no_grad()
    def interpolate(self, start: np.ndarray, end: np.ndarray, num_frames: int = 7, samples: int | None = None,
                    seed: int | None = None, steps: int | None = None, sampler: str | None = None,
                    guidance: float | None = None, progress: bool | None = None, *,
                    options: SamplingOptions | None = None, strategy: str = "infill", reinject: int = 0,
                    cascade: bool = False) -> np.ndarray:
        """The `num_frames` frames between `start` and `end` (uint8 (H, W, 3) each, same size):
        uint8 (samples, num_frames, H, W, 3). More in-betweens than one window holds are filled
        hierarchically (key frames first). strategy: "infill", "bidirectional" (needs the
        backward stage) or "time-reversal" (module docstring); reinject: noise re-injections per
        early solver step (`vidm.diffusion.sampling`; 0 = none, the paper's sampler uses 5).
        cascade: VIDIM's cascade, the upsampler stage remaking the base model's in-betweens at
        its size (`_upsample`; a ConfigError without one); decoded at the end frames' size."""
        start, end = _check_frame(start, "start"), _check_frame(end, "end")
        if start.shape != end.shape:
            raise ShapeError(f"start and end frames differ in size: {start.shape[1]}x{start.shape[0]} vs "
                             f"{end.shape[1]}x{end.shape[0]}")
        opts = _merge(options, samples=samples, seed=seed, steps=steps, sampler=sampler, guidance=guidance,
                      progress=progress)
        return self.interpolate_batch(start[None], end[None], num_frames, options=opts, strategy=strategy,
                                      reinject=reinject, cascade=cascade)[0]

    @torch.no_grad()
    def interpolate_batch(self, starts: np.ndarray, ends: np.ndarray, num_frames: int = 7,
                          samples: int | None = None, seed: int | None = None, steps: int | None = None,
                          sampler: str | None = None, guidance: float | None = None,
                          progress: bool | None = None, *, options: SamplingOptions | None = None,
                          strategy: str = "infill", reinject: int = 0, cascade: bool = False) -> np.ndarray:
        """`interpolate` for B pairs in one sampler run: starts, ends uint8 (B, H, W, 3) ->
        uint8 (B, samples, num_frames, H, W, 3). With B == 1 it equals `interpolate`; with B > 1
        each pair's noise depends on its place in the batch (reproducible for a fixed batch)."""
        _check_count("num_frames", num_frames, 1)
        opts = self._options(options, samples=samples, seed=seed, steps=steps, sampler=sampler,
                             guidance=guidance, progress=progress)
        self._check_between(strategy, reinject)
        self.check_cascade(cascade)
        starts, ends = _check_pairs(starts, ends)
        B, n, S = len(starts), num_frames + 2, opts.samples
        windows = plan.plan_infill(n, self.config.window)
        gen = self._generator(opts)
        z_ends = self.encode(np.concatenate([starts, ends]))  # (2B, C, h, w), one encode call
        z = z_ends.new_zeros((B * S, n, *z_ends.shape[1:]))  # (B*S, n, C, h, w), pair-major
        z[:, 0] = z_ends[:B].repeat_interleave(S, 0)
        z[:, -1] = z_ends[B:].repeat_interleave(S, 0)
        made = torch.zeros(n, dtype=torch.bool, device=self.device)
        made[0] = made[-1] = True
        hi = None
        if cascade:  # the end frames at the upsampler's size, its known frames
            z_hi = self.encode(np.concatenate([starts, ends]), self.upsampler_size)  # (2B, C, H', W')
            hi = {0: z_hi[:B].repeat_interleave(S, 0), n - 1: z_hi[B:].repeat_interleave(S, 0)}
        z = self._fill_all(z, made, windows, opts, gen, "interpolate", strategy, reinject, hi)
        out = self._decode_between(z, starts, ends, S)  # (B*S, n-2, H, W, 3)
        return out.reshape(B, S, *out.shape[1:])

    @torch.no_grad()
    def splat_batch(self, starts: np.ndarray, ends: np.ndarray, num_frames: int = 7) -> np.ndarray:
        """The solver's "splat" start alone, with no diffusion step (a reference for evaluation):
        starts, ends uint8 (B, H, W, 3) -> uint8 (B, 1, num_frames, H, W, 3), the end frames'
        latents moved to each in-between time by global matching (`vidm.diffusion.splat`)."""
        _check_count("num_frames", num_frames, 1)
        starts, ends = _check_pairs(starts, ends)
        B = len(starts)
        z = self.encode(np.concatenate([starts, ends]))  # (2B, C, h, w)
        fractions = [i / (num_frames + 1) for i in range(1, num_frames + 1)]
        mids = splat_inbetweens(z[:B], z[B:], fractions)  # (B, n, C, h, w)
        full = torch.cat([z[:B, None], mids, z[B:, None]], 1)
        return self._decode_between(full, starts, ends, 1)[:, None]

    @torch.no_grad()
    def oracle_batch(self, starts: np.ndarray, ends: np.ndarray, truths: np.ndarray) -> np.ndarray:
        """The decoder's share of the error (for evaluation): the true in-between frames uint8
        (B, n, H, W, 3) encoded and decoded again, with the end frames as references when the
        autoencoder takes them -> uint8 (B, 1, n, H, W, 3). No diffusion step."""
        starts, ends = _check_pairs(starts, ends)
        truths = np.asarray(truths)
        if truths.ndim != 5 or truths.shape[0] != len(starts) or truths.shape[2:] != starts.shape[1:]:
            raise ShapeError(f"truths must be uint8 (B, n, H, W, 3) matching starts {starts.shape}, "
                             f"got {truths.shape}")
        B, n = truths.shape[:2]
        z = self.encode(np.concatenate([starts, truths.reshape(B * n, *truths.shape[2:]), ends]))
        mids = z[B:B + B * n].reshape(B, n, *z.shape[1:])
        full = torch.cat([z[:B, None], mids, z[B + B * n:, None]], 1)
        return self._decode_between(full, starts, ends, 1)[:, None]

    @torch.no_grad()
    def references_only_batch(self, starts: np.ndarray, ends: np.ndarray, num_frames: int = 7) -> np.ndarray:
        """What the reference decoder makes from the end frames alone, told the latent is unknown
        (for evaluation): uint8 (B, 1, num_frames, H, W, 3). Needs a reference autoencoder."""
        _check_count("num_frames", num_frames, 1)
        starts, ends = _check_pairs(starts, ends)
        if not self.uses_references:
            raise ConfigError("this pipeline's autoencoder has a plain decoder; it cannot decode from "
                              "references alone")
        C, h, w = self._latent_shape()
        z = torch.zeros(len(starts), num_frames + 2, C, h, w, device=self.device)
        given = {0: self.to_pixels(starts), num_frames + 1: self.to_pixels(ends)}
        return self._decode_videos(z, given=given, latent_sigma=float("inf"))[:, 1:-1][:, None]

    @torch.no_grad()
    def interpolate_video(self, frames: np.ndarray, factor: int, samples: int | None = None, seed: int | None = None,
                          steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                          progress: bool | None = None, *, options: SamplingOptions | None = None,
                          strategy: str = "infill", reinject: int = 0, cascade: bool = False) -> np.ndarray:
        """Raise the frame rate of uint8 (N, H, W, 3) by an integer `factor`:
        uint8 (samples, (N - 1) * factor + 1, H, W, 3); the input frames are kept as given.
        strategy, reinject: as for `interpolate` (in a window holding several input gaps each
        direction is given the input frames except those past the last frame it makes,
        `vidm.diffusion.bidirectional`); cascade: as for `interpolate`."""
        frames = _check_frames(frames)
        _check_count("factor", factor, 1)
        opts = self._options(options, samples=samples, seed=seed, steps=steps, sampler=sampler,
                             guidance=guidance, progress=progress)
        self._check_between(strategy, reinject)
        self.check_cascade(cascade)
        if len(frames) < 2:
            raise ShapeError(f"interpolate_video needs at least 2 frames, got {len(frames)}")
        n, windows = plan.plan_upsample(len(frames), factor, self.config.window)
        gen = self._generator(opts)
        given = self.encode(frames)  # (N, C, h, w)
        z = given.new_zeros((opts.samples, n, *given.shape[1:]))
        made = torch.zeros(n, dtype=torch.bool, device=self.device)
        z[:, ::factor] = given
        made[::factor] = True
        hi = None
        if cascade:
            z_hi = self.encode(frames, self.upsampler_size)  # (N, C, H', W')
            hi = {i * factor: z_hi[i:i + 1].expand(opts.samples, -1, -1, -1) for i in range(len(frames))}
        z = self._fill_all(z, made, windows, opts, gen, "interpolate", strategy, reinject, hi)
        given = None
        if self.uses_references:
            px = self.to_pixels(frames)
            given = {i * factor: px[i:i + 1].expand(opts.samples, -1, -1, -1) for i in range(len(frames))}
        out = self._decode_videos(z, size=frames.shape[1:3], given=given)
        out[:, ::factor] = frames  # the given frames exactly, not their autoencoder round trip
        return out

    @torch.no_grad()
    def predict(self, frames: np.ndarray, num_future: int, samples: int | None = None, seed: int | None = None,
                steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                progress: bool | None = None, *, options: SamplingOptions | None = None) -> np.ndarray:
        """Continue a clip uint8 (N, H, W, 3): uint8 (samples, num_future, H, W, 3)."""
        frames = _check_frames(frames)
        opts = _merge(options, samples=samples, seed=seed, steps=steps, sampler=sampler, guidance=guidance,
                      progress=progress)
        return self.predict_batch(frames[None], num_future, options=opts)[0]

    @torch.no_grad()
    def predict_batch(self, given: np.ndarray, num_future: int, samples: int | None = None, seed: int | None = None,
                      steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                      progress: bool | None = None, *, options: SamplingOptions | None = None) -> np.ndarray:
        """`predict` for B clips of equal length in one sampler run: given uint8 (B, N, H, W, 3) ->
        uint8 (B, samples, num_future, H, W, 3). With B == 1 it equals `predict`."""
        given = np.asarray(given)
        if given.ndim != 5 or given.dtype != np.uint8 or given.shape[-1] != 3 or 0 in given.shape[:2]:
            raise ShapeError(f"given must be uint8 (B, N, H, W, 3), got {given.dtype} {given.shape}")
        _check_count("num_future", num_future, 1)
        opts = self._options(options, samples=samples, seed=seed, steps=steps, sampler=sampler,
                             guidance=guidance, progress=progress)
        B, n_given, H, W = given.shape[:4]
        S, n = opts.samples, n_given + num_future
        windows = plan.plan_continuation(n_given, n, self.config.window, self.config.context)
        gen = self._generator(opts)
        z_given = self.encode(given.reshape(B * n_given, H, W, 3))  # (B*N, C, h, w)
        z_given = z_given.reshape(B, n_given, *z_given.shape[1:]).repeat_interleave(S, 0)
        z = z_given.new_zeros((B * S, n, *z_given.shape[2:]))  # (B*S, n, C, h, w)
        z[:, :n_given] = z_given
        made = torch.zeros(n, dtype=torch.bool, device=self.device)
        made[:n_given] = True
        z = self._fill_all(z, made, windows, opts, gen, "predict")
        if self.uses_references:
            px = self.to_pixels(given.reshape(B * n_given, H, W, 3)).reshape(B, n_given, 3, H, W)
            px = px.repeat_interleave(S, 0)
            out = self._decode_videos(z, given={i: px[:, i] for i in range(n_given)})[:, n_given:]
        else:
            out = self._decode_videos(z[:, n_given:], size=(H, W))  # (B*S, num_future, H, W, 3)
        return out.reshape(B, S, *out.shape[1:])

    def _decode_between(self, z: torch.Tensor, starts: np.ndarray, ends: np.ndarray, samples: int) -> np.ndarray:
        """z (B*samples, n, C, h, w) with the end frames' latents at 0 and n-1 -> the in-betweens
        uint8 (B*samples, n-2, H, W, 3) at the end frames' size."""
        if not self.uses_references:
            return self._decode_videos(z[:, 1:-1], size=starts.shape[1:3])
        a, b = (self.to_pixels(x).repeat_interleave(samples, 0) for x in (starts, ends))
        return self._decode_videos(z, given={0: a, z.shape[1] - 1: b})[:, 1:-1]

    def _decode_videos(self, z: torch.Tensor, size=None, given: dict[int, torch.Tensor] | None = None,
                       latent_sigma: float | None = None) -> np.ndarray:
        """Scaled latents (B, T, C, h, w) -> uint8 (B, T, H, W, 3). With a reference autoencoder
        and `given` ({position: (B, 3, H, W) pixels}, {} for generation) the frames not given are
        built from their reference frames at the given frames' size (the latents' uncertainty
        `latent_sigma`, default pipeline.json's decode_latent_sigma) and the given ones are their
        own pixels; otherwise each frame is decoded alone and resized to `size`."""
        B, T = z.shape[:2]
        if given is None or not self.uses_references:
            frames = self.decode(z.reshape(B * T, *z.shape[2:]), size)
            return frames.reshape(B, T, *frames.shape[1:])
        sigma = self.config.decode_latent_sigma if latent_sigma is None else latent_sigma
        _check_finite(z.float())  # NaN latents would steer the warps to NaN coordinates
        made = decode_with_references(self.autoencoder, z, given, sigma, self._autocast)
        x = torch.stack([given[t] if t in given else made[t] for t in range(T)], 1)  # (B, T, 3, H, W)
        return _to_uint8(x).permute(0, 1, 3, 4, 2).numpy()


@dataclass(frozen=True)
class _Between:
    """How `_fill` samples in-between windows: the strategy, the backward direction's anchor
    end_anchor (B, C, h, w) (the video's last frame; None for infill) and the re-injections."""

    strategy: str = "infill"
    end_anchor: torch.Tensor | None = None
    reinject: int = 0


def _temporal_layers(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(name, heads) of a motion model's temporal attention layers, in order."""
    return [(name, m.heads) for name, m in temporal_layers(model)]


def _stage_models(models: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """{stage name: model} in registry order, or a ConfigError for an unknown stage or a model
    of another class than its stage's."""
    for name, model in models.items():
        cls = registry.get(name).model_class()
        if not isinstance(model, cls):
            raise ConfigError(f"the {name} stage takes a {cls.__name__}, got {type(model).__name__}")
    return {name: models[name] for name in registry.names() if name in models}


def _merge(options: SamplingOptions | None, **given) -> SamplingOptions:
    """`options` (default: all blank) with the `given` keywords that are not None on top."""
    return (options or SamplingOptions()).replace(**given)


def _bar_callback(bar):
    """A sampler callback advancing the progress bar one step (None without a bar)."""
    return (lambda info: bar.update(1)) if bar is not None else None


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float pixels in [-1, 1] (any shape) -> uint8 on the CPU, refusing non-finite values."""
    return ((_check_finite(x.float().cpu()).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_finite(x: torch.Tensor) -> torch.Tensor:
    """x, or a NumericalError when any value is NaN or inf (uint8 would make them black)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        frames = int(bad.reshape(-1, *x.shape[-3:]).flatten(1).any(1).sum())
        raise NumericalError(f"sampling produced non-finite values (NaN or inf) in {frames} of "
                             f"{x.reshape(-1, *x.shape[-3:]).shape[0]} frames; nothing was written (check "
                             f"--guidance and the model's pipeline.json, e.g. sigma_data)")
    return x


def _check_count(name: str, value, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_pairs(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = np.asarray(starts), np.asarray(ends)
    if starts.ndim != 4 or starts.shape != ends.shape or starts.dtype != np.uint8 or ends.dtype != np.uint8:
        raise ShapeError(f"starts/ends must be uint8 (B, H, W, 3) of one shape, "
                         f"got {starts.dtype} {starts.shape} and {ends.dtype} {ends.shape}")
    return starts, ends


def _check_frame(frame: np.ndarray, name: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"{name} must be a uint8 (H, W, 3) image, got {frame.dtype} {frame.shape}")
    return frame


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ShapeError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ShapeError("no frames given")
    return frames
