"""The stage registry: every kind of model a pipeline folder can hold, in one place.

    from vidm import stages
    stages.names()                       # ("autoencoder", "content", "motion", "backward", "upsampler")
    stages.names(required=True)          # ("autoencoder", "content", "motion")
    spec = stages.get("motion")          # a StageSpec
    spec.model_class(), spec.config_class(), spec.preset_table(), spec.trainer

A pipeline folder is `pipeline.json` plus one subfolder per stage it has, named by the stage:
the required stages always, optional ones where present. `vidm pack` takes one `--NAME` flag per
stage, `vidm train NAME` runs the stage's trainer, presets and config classes are found here.
Adding a stage is one `StageSpec` in `STAGES` plus its own code (model, trainer, sampling).

Classes are named by dotted path and imported on first use: this module imports no torch, so
`vidm --help` stays fast, and it imports no model module, so no import circle passes through it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vidm.errors import ConfigError


@dataclass(frozen=True)
class StageSpec:
    name: str  # subfolder of a pipeline folder, `vidm train NAME`, `vidm pack --NAME`
    model: str  # "module:Class" of the network (a PretrainedMixin nn.Module)
    config: str  # "module:Class" of its config dataclass (the model's `config_class`)
    presets: str  # "module:NAME" of its {preset name: () -> config} table
    help: str  # what it is ("motion model"), for the help of `vidm pack --NAME` and `vidm train`
    # The model kind written in config.json ("kind"), the config class's `kind`; "" = `name`.
    # Several stages may share one (a fine-tuned copy of the motion model is a "motion" model).
    kind: str = ""
    required: bool = True  # every pipeline folder has it (optional stages are loaded when present)
    trainer: str | None = None  # module whose main(argv) trains it (`vidm train NAME`)
    train_config: str | None = None  # "module:Class" of the trainer's config dataclass
    latent: bool = True  # a denoiser over the autoencoder's latents (its in_channels must match them)
    # pipeline.json settings its training fixes, read from its training record by `vidm pack`
    # (which refuses stages that disagree); order is the order they are written into the record.
    settings: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.name)

    def model_class(self) -> type:
        return _load(self.model)

    def config_class(self) -> type:
        return _load(self.config)

    def preset_table(self) -> dict:
        return _load(self.presets)

    def train_config_class(self) -> type | None:
        return _load(self.train_config) if self.train_config else None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("autoencoder", "vidm.models.autoencoder:AutoencoderKL", "vidm.models.configs:AutoencoderConfig",
              "vidm.models.presets:AUTOENCODER", "autoencoder model",
              trainer="vidm.train.autoencoder", train_config="vidm.train.config:AutoencoderTrainConfig",
              latent=False),
    StageSpec("content", "vidm.models.unet2d:ContentUNet", "vidm.models.configs:ContentUNetConfig",
              "vidm.models.presets:CONTENT", "content model",
              trainer="vidm.train.content", train_config="vidm.train.config:ContentTrainConfig",
              settings=("sigma_data", "size")),
    StageSpec("motion", "vidm.models.unet3d:MotionUNet", "vidm.models.configs:MotionUNetConfig",
              "vidm.models.presets:MOTION", "motion model",
              trainer="vidm.train.motion", train_config="vidm.train.config:MotionTrainConfig",
              settings=("sigma_data", "size", "window", "max_span")),
    # Generative Inbetweening's backward-motion model: a copy of the motion model fine-tuned on
    # time-reversed clips (train/backward.py); used by interpolate(strategy="bidirectional").
    StageSpec("backward", "vidm.models.unet3d:MotionUNet", "vidm.models.configs:MotionUNetConfig",
              "vidm.models.presets:MOTION", "backward-motion model (time-reversed fine-tune of the motion model)",
              kind="motion", required=False,
              trainer="vidm.train.backward", train_config="vidm.train.config:BackwardTrainConfig",
              settings=("sigma_data", "size", "window", "max_span")),
    # VIDIM's cascade: a motion model at low_res_scale times the base latent size, conditioned on
    # the base model's video (train/upsampler.py); used by interpolate(cascade=True). Its frame
    # size is the pipeline's times its scale, so "size" is not a setting it shares.
    StageSpec("upsampler", "vidm.models.unet3d:MotionUNet", "vidm.models.configs:MotionUNetConfig",
              "vidm.models.presets:UPSAMPLER", "cascade upsampler (motion model at 2x the latent size)",
              kind="motion", required=False,
              trainer="vidm.train.upsampler", train_config="vidm.train.config:UpsamplerTrainConfig",
              settings=("sigma_data", "window", "max_span")),
)


def all_stages() -> tuple[StageSpec, ...]:
    # Read at call time (not bound at import) so a test can register a stage by patching STAGES.
    return STAGES


def names(required: bool | None = None) -> tuple[str, ...]:
    """Stage names in registry order; `required` True / False: only the required / optional ones."""
    return tuple(s.name for s in STAGES if required is None or s.required == required)


def get(name: str) -> StageSpec:
    return _first("name", name, "stage", ", ".join(names()))


def kinds() -> tuple[str, ...]:
    """The model kinds (config.json "kind") of all stages, each once, in registry order."""
    return tuple(dict.fromkeys(s.kind for s in STAGES))


def for_kind(kind: str) -> StageSpec:
    """The first stage whose models are of `kind` (its class builds every model of that kind)."""
    return _first("kind", kind, "model kind", sorted(kinds()))


def trainable() -> tuple[str, ...]:
    """Names of the stages `vidm train` can train."""
    return tuple(s.name for s in STAGES if s.trainer)


def _first(field: str, value: str, what: str, known) -> StageSpec:
    for s in STAGES:
        if getattr(s, field) == value:
            return s
    raise ConfigError(f"unknown {what} {value!r}; known: {known}")


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["StageSpec", "STAGES", "all_stages", "names", "get", "kinds", "for_kind", "trainable"]
