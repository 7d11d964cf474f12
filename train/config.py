"""Training configs: nested dataclasses filled from a YAML file plus dotted `key=value` overrides.

Every key is checked against the dataclass before anything trains: an unknown key or a value of
the wrong type is a one-line `ConfigError` naming the key and the file. The `model` section is
free-form here (its keys are the fields of the model's own config dataclass) and is checked by
the stage against that dataclass (`check_model_overrides`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from vidm.data.frame_bank import ExampleConfig  # reference-decoder examples (autoencoder)
from vidm.diffusion.masks import MaskConfig  # RaMViD modes + VIDIM dropout probabilities
from vidm.errors import ConfigError


# ----------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"  # the run folder is output_dir/name
    seed: int = 0
    steps: int = 1000  # optimizer steps
    # auto = bf16 where the hardware does bf16 math (AVX-512 BF16/AMX CPUs, recent GPUs), fp16 on
    # GPUs without bf16, else fp32 ("no"). Emulated bf16 on other CPUs is many times slower.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    grad_accum: int = 1  # micro-batches per optimizer step
    log_every: int = 10  # TensorBoard scalars + metrics.jsonl every N steps
    sample_every: int = 500  # sample grid/video from the EMA model (0 = never)
    val_every: int = 250  # validation loss on held-out clips (0 = never)
    checkpoint_every: int = 500  # full training state (0 = only at the end / on a signal)
    keep_checkpoints: int = 2  # the last K step-XXXXXXX folders are kept
    progress: bool = True  # tqdm bar on the main process
    cpu: bool = False  # force CPU even where CUDA is present
    # Seconds the step in progress gets after SIGINT/SIGTERM before the run exits without saving
    # it (the last complete checkpoint is kept); 0 = wait for the step however long it takes.
    stop_timeout: float = 30.0
    # A model folder (config.json + model.safetensors, e.g. runs/NAME/model or a stage of a pipeline
    # folder) whose weights start a new run: fine-tuning. Its weights must fit the run's model (which
    # may add blocks); ignored on resume.
    init_from: Optional[str] = None
    # Parameter-name prefixes NOT taken from init_from (they keep their fresh init), e.g.
    # ["body.conv_out"] restarts the zero-initialised output layer when its meaning changes.
    init_skip: tuple[str, ...] = ()
    # Parameter-name prefixes that train; every other weight stays frozen at its start value
    # (empty = all train). E.g. ["ref_decoder."] teaches a reference decoder to an autoencoder
    # from run.init_from whose latents other models already use.
    trainable: tuple[str, ...] = ()


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 10000  # linear warm-up of the learning rate from 0
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping (the norm is still logged)


@dataclass
class EMAConfig:
    decay: float = 0.9999
    # Decay warm-up: decay_t = min(decay, (1 + t) / (10 + t)), so early weights are not frozen in.
    warmup: bool = True


@dataclass
class DataConfig:
    root: Optional[str] = None  # folder of videos (read on the fly)
    latents: Optional[str] = None  # latent cache folder (`vidm data cache-latents`); content/motion only
    autoencoder: Optional[str] = None  # model folder; encodes videos on the fly, decodes samples
    size: int = 64  # frame size (short side resized, centre crop)
    num_frames: int = 8  # motion: frames per training window
    stride: Union[int, tuple[int, int]] = 1  # frame stride, or [lo, hi] sampled per clip
    flip: bool = False  # random horizontal flips (videos only)
    batch_size: int = 8  # per process, per micro-batch
    num_workers: int = 0
    val_clips: int = 4  # videos held out (the last ones in sorted order) for validation
    # A separate folder of held-out videos (whole clips; the reference autoencoder uses it
    # instead of val_clips, so the held-out clips are named, not the last in sorted order).
    val_root: Optional[str] = None
    max_short_side: int = 256  # reference autoencoder: frames kept in memory with this short side
    val_batches: int = 1  # validation batches per evaluation (each rank)
    # Upsampler only: the latent cache of the same videos at the base model's frame size
    # (`vidm data cache-latents --size BASE` on data.latents' videos), the condition it learns from.
    low_latents: Optional[str] = None


@dataclass
class DiffusionConfig:
    """EDM training distribution (Karras et al. 2022) and the sampler used for previews."""

    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2
    sampler: str = "heun"
    sample_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    num_samples: int = 4  # previews per sample step


@dataclass
class MotionDiffusionConfig(DiffusionConfig):
    # Share of training windows whose unknown frames all lie between known frames that get the
    # splat start (vidm.diffusion.splat) instead of x0 under the noise: x0 + u (m - x0), u ~ U(0, 1),
    # so the model learns to refine what interpolation sampling starts from (infill_init = splat).
    p_splat_start: float = 0.0


@dataclass
class AutoencoderLossConfig:
    l1: float = 1.0
    l2: float = 0.0  # squared error of every built frame (plain and reference decoding)
    kl: float = 1e-6
    # Reference decoding (model.references > 0): Laplacian-pyramid L1 on the built frame, and
    # the latent the reference path sees: exact (p_latent_clean), dropped (p_latent_drop), or
    # noised at sigma ~ log-uniform(0.05, latent_sigma_max) x the latents' std (the rest).
    laplacian: float = 1.0
    p_latent_clean: float = 0.4
    p_latent_drop: float = 0.2
    latent_sigma_max: float = 1.5
    logit_l2: float = 1.0e-4  # penalty on the reference decoder's squared blend logits


# ----------------------------------------------------------------------------- per stage


@dataclass
class _StageConfig:
    """Sections every stage has; each stage adds its own (and its `stage` name)."""

    run: RunConfig = field(default_factory=RunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class AutoencoderTrainConfig(_StageConfig):
    stage: Literal["autoencoder"] = "autoencoder"
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    references: ExampleConfig = field(default_factory=ExampleConfig)  # model.references > 0 only


@dataclass
class ContentTrainConfig(_StageConfig):
    stage: Literal["content"] = "content"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass
class MotionTrainConfig(_StageConfig):
    stage: Literal["motion"] = "motion"
    diffusion: MotionDiffusionConfig = field(default_factory=MotionDiffusionConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)


@dataclass
class BackwardConditionConfig:
    """Conditioning of the backward fine-tune (train/backward.py): prediction from the first
    frames. The first `known_frames` frames of the reversed window (the original last ones) are
    given to the backward model; the forward model, whose maps it is fed, gets the first
    `known_frames` of the same window in forward order. With the dropout probabilities both
    models drop their known frames (they become noisy frames in the loss) or the anchor, so
    guidance on the input frames keeps working."""

    known_frames: int = 1
    p_drop_known: float = 0.1
    p_drop_anchor: float = 0.1


@dataclass
class BackwardTrainConfig(_StageConfig):
    """The backward-motion fine-tune (Generative Inbetweening). `run.init_from` (the forward
    motion model) is required; the model is a copy of it, so the `model` section only names
    its preset (checked against the forward model's)."""

    stage: Literal["backward"] = "backward"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    condition: BackwardConditionConfig = field(default_factory=BackwardConditionConfig)


@dataclass
class CascadeConfig:
    """The upsampler's training (train/upsampler.py, VIDIM's cascade). The noise-conditioning
    augmentation level of each window's low-resolution condition is drawn from U(0, aug_max)
    (`vidm.diffusion.cascade`). init_from_motion: a trained motion model folder whose weights
    the upsampler starts from (its input conv widened with zeros), or null for a fresh start."""

    aug_max: float = 0.5
    init_from_motion: Optional[str] = None


@dataclass
class UpsamplerTrainConfig(MotionTrainConfig):
    """A motion model at `model.low_res_scale` times the base latent size, trained on
    data.latents (its size) conditioned on data.low_latents (the base size) of the same videos."""

    stage: Literal["upsampler"] = "upsampler"
    cascade: CascadeConfig = field(default_factory=CascadeConfig)


def stage_configs() -> dict[str, type]:
    """{stage name: its training config class} for every trainable stage of the registry
    (vidm.stages). A function, not a table built here: the registry names these classes by
    path, and this module is still loading while its module level runs."""
    from vidm import stages

    return {s.name: s.train_config_class() for s in stages.all_stages() if s.train_config}


# ----------------------------------------------------------------------------- loading


def load_config(cls, path: str | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Build `cls` from the YAML at `path` (if any), then apply `key=value` overrides in order."""
    import yaml

    raw: dict[str, Any] = {}
    src = "defaults"
    if path is not None:
        p = resolve_config_path(path, _stage_of(cls))
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            msg = str(e).replace("\n", " ")
            raise ConfigError(f"{path}: not valid YAML ({msg})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        src = str(path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), value, item)
    return _build(cls, raw, prefix="", src=src)


def _presets_root() -> Path:
    import vidm

    return Path(vidm.__file__).resolve().parent / "configs"


def _stage_of(cls) -> str | None:
    f = {f.name: f for f in dataclasses.fields(cls)}.get("stage") if dataclasses.is_dataclass(cls) else None
    return f.default if f is not None and isinstance(f.default, str) else None


def presets(stage: str) -> list[str]:
    """Names of the config presets shipped for `stage` (vidm/configs/STAGE/NAME.yaml)."""
    return sorted(p.stem for p in (_presets_root() / stage).glob("*.yaml"))


def resolve_config_path(path: str | Path, stage: str | None = None) -> Path:
    """--config: a YAML file (relative to the current folder), else a preset shipped with the
    package, found from any folder: `tiny` (the stage's preset NAME), `configs/motion/tiny.yaml`
    or `motion/tiny.yaml` (the checkout's configs/ is the package's vidm/configs/)."""
    p = Path(path)
    if p.is_file():
        return p
    root = _presets_root()
    tries = []
    if stage and len(p.parts) == 1:
        tries.append(root / stage / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"))
    parts = p.parts[1:] if p.parts and p.parts[0] == "configs" else p.parts
    if parts and not p.is_absolute():
        tries.append(root.joinpath(*parts))
    for t in tries:
        if t.is_file():
            return t
    known = f" (presets for {stage}: {', '.join(presets(stage))})" if stage and presets(stage) else ""
    raise ConfigError(f"{path}: config file not found{known}")


def _set_dotted(tree: dict, key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _build(cls, raw: dict, prefix: str, src: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{src}: unknown config key '{prefix}{key}' (known here: {known})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        tp = hints[f.name]
        value = raw[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, f"{prefix}{f.name}.", src)
        elif f.name == "model" and tp == dict[str, Any]:
            if not isinstance(value, dict):
                raise ConfigError(f"{src}: {prefix}model must be a mapping (preset: NAME, field: value ...)")
            base = f.default_factory()  # keep the default preset unless given
            base.update(value)
            kwargs[f.name] = base
        else:
            kwargs[f.name] = coerce(value, tp, f"{prefix}{f.name}", src)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check `value` against the annotation `tp`, converting only the lossless cases
    (int -> float, "5e-4" -> float: PyYAML reads exponents without a dot as strings,
    list -> tuple). Anything else is a one-line ConfigError."""
    ok, out = _try(value, tp)
    if not ok:
        raise ConfigError(f"{src}: {key} = {value!r} has the wrong type (expected {_type_name(tp)})")
    return out


def _try(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for a in args:
            ok, out = _try(value, a)
            if ok:
                return True, out
        return False, None
    if tp is type(None):
        return value is None, None
    if origin is Literal:
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            # YAML 1.1 reads `no`/`off`/`yes`/`on` as booleans (e.g. mixed_precision: no).
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            match = [a for a in args if a in words]
            return (True, match[0]) if match else (False, None)
        return (value in args and isinstance(value, type(args[0]))), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(value) != len(args):
            return False, None
        out = []
        for v, a in zip(value, args):
            ok, o = _try(v, a)
            if not ok:
                return False, None
            out.append(o)
        return True, tuple(out)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for v in value:
            ok, o = _try(v, args[0] if args else Any)
            if not ok:
                return False, None
            out.append(o)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def to_dict(cfg) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def save_yaml(cfg, path: str | Path) -> None:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def check_model_overrides(model_section: dict[str, Any], config_cls, src: str = "config") -> dict[str, Any]:
    """Check the `model` section (minus `preset`) against the model's config dataclass and
    return the overrides with their types checked."""
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    out = {}
    for key, value in model_section.items():
        if key == "preset":
            continue
        if key not in names:
            raise ConfigError(
                f"{src}: unknown config key 'model.{key}' for {config_cls.__name__} "
                f"(known: preset, {', '.join(sorted(names))})"
            )
        out[key] = coerce(value, hints[key], f"model.{key}", src)
    return out
