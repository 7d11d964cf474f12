"""Config dataclasses, one per model. A config is the whole recipe for rebuilding a model:
it is written into `config.json` beside the weights and read back by `from_pretrained`.

`to_dict()` gives plain JSON types; `from_dict()` rejects unknown keys and wrong types with a
`ConfigError` (a typo in a config must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from vidm.errors import ConfigError

# Head sizes the Triton attention kernel supports; the torch fallback takes any.
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
# How a UNet's ResBlock norms are modulated: "embedding" = per-sample scale/shift from the noise
# embedding (ADM/EDM); "positional" = per-position scale/shift from a coordinate MLP of (noise
# level, frame time, y, x) (VIDM's PosGN, vidm.models.positional), with no noise embedding.
MODULATIONS = ("embedding", "positional")


class ConfigBase:
    """Shared (de)serialisation and validation for the model configs."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for name, v in d.items():
            default = _default_of(fields[name])
            kwargs[name] = _coerce(cls.__name__, name, v, default)
        cfg = cls(**kwargs)
        return cfg

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default, as to_dict() writes it (what an older config.json without the
        field means)."""
        return {f.name: _plain(_default_of(f)) for f in dataclasses.fields(cls)}

    def replace(self, **changes):
        """A copy with some fields changed (validated like from_dict)."""
        d = self.to_dict()
        d.update(changes)
        return type(self).from_dict(d)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden
        pass


def _plain(v: Any) -> Any:
    """A field value as JSON writes it: tuples become lists."""
    return list(v) if isinstance(v, tuple) else v


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _coerce(cls_name: str, name: str, v: Any, default: Any) -> Any:
    """Check `v` against the type of the field's default; JSON lists become tuples."""
    where = f"{cls_name}.{name}"
    if default is None or v is None:
        return v
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true/false, got {v!r}")
        return v
    if isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: expected an integer, got {v!r}")
        return v
    if isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {v!r}")
        return float(v)
    if isinstance(default, str):
        if not isinstance(v, str):
            raise ConfigError(f"{where}: expected a string, got {v!r}")
        return v
    if isinstance(default, tuple):
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConfigError(f"{where}: expected a list of integers, got {v!r}")
        return tuple(v)
    return v


def _check_positive(cls_name: str, **values: int) -> None:
    for k, v in values.items():
        if v <= 0:
            raise ConfigError(f"{cls_name}.{k}: must be > 0, got {v}")


def _check_channels(cls_name: str, channels: list[int], norm_groups: int, head_dim: int | None) -> None:
    """Every GroupNorm needs channels % groups == 0; every attention needs channels % head_dim == 0."""
    if head_dim is not None and head_dim not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(f"{cls_name}.head_dim: must be one of {SUPPORTED_HEAD_DIMS}, got {head_dim}")
    for c in channels:
        if c % norm_groups:
            raise ConfigError(f"{cls_name}: channel count {c} is not divisible by norm_groups={norm_groups}")
        if head_dim is not None and c % head_dim:
            raise ConfigError(f"{cls_name}: channel count {c} is not divisible by head_dim={head_dim}")


@dataclass
class AutoencoderConfig(ConfigBase):
    """KL-regularised per-frame VAE. Latent = (latent_channels, H / f, W / f) with
    f = downsample_factor = 2 ** (len(ch_mult) - 1)."""

    kind: ClassVar[str] = "autoencoder"

    in_channels: int = 3
    latent_channels: int = 4
    downsample_factor: int = 4
    base_channels: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    norm_groups: int = 8
    mid_attention: bool = True  # one self-attention at the lowest resolution (encoder + decoder)
    linear_shortcut: bool = True  # learned linear patch code beside the deep encoder/decoder paths
    head_dim: int = 32
    latent_scale: float = 1.0  # multiply latents by this (set by measure_latent_scale) -> ~unit std
    preset: str = ""
    # Reference-conditioned decoding (vidm.models.reference_decoder): 0 = the plain decoder only;
    # 2 = decode() also takes up to two reference frames and builds the frame from their pixels.
    references: int = 0
    ref_channels: int = 32  # width of the reference decoder's networks
    ref_corr_radius: int = 3  # cost-volume radius at S/4 (cells); reference pairs get radius + 1
    ref_flow_prior: str = "none"  # "dis": in-betweens start from DIS flow (vidm.models.flow_prior)
    ref_warp: str = "bilinear"  # the references' sampling kernel: "bilinear", "bicubic" or "adaptive"

    def validate(self) -> None:
        n = type(self).__name__
        _check_positive(n, in_channels=self.in_channels, latent_channels=self.latent_channels,
                        base_channels=self.base_channels, num_res_blocks=self.num_res_blocks,
                        norm_groups=self.norm_groups, downsample_factor=self.downsample_factor)
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ConfigError(f"{n}.ch_mult: must be a non-empty list of positive ints, got {self.ch_mult}")
        if self.downsample_factor not in (2, 4, 8, 16):
            raise ConfigError(f"{n}.downsample_factor: must be 2, 4, 8 or 16, got {self.downsample_factor}")
        levels = int(math.log2(self.downsample_factor)) + 1
        if len(self.ch_mult) != levels:
            raise ConfigError(f"{n}.ch_mult: downsample_factor={self.downsample_factor} needs {levels} "
                              f"levels (len(ch_mult) = log2(factor) + 1), got {len(self.ch_mult)}")
        if not self.latent_scale > 0:
            raise ConfigError(f"{n}.latent_scale: must be > 0, got {self.latent_scale}")
        if self.references not in (0, 2):
            raise ConfigError(f"{n}.references: must be 0 (plain decoder) or 2, got {self.references}")
        _check_positive(n, ref_channels=self.ref_channels, ref_corr_radius=self.ref_corr_radius)
        from vidm.models.flow_prior import PRIORS

        if self.ref_flow_prior not in PRIORS:
            raise ConfigError(f"{n}.ref_flow_prior: must be one of {PRIORS}, got {self.ref_flow_prior!r}")
        from vidm.models.reference_decoder import REF_WARPS

        if self.ref_warp not in REF_WARPS:
            raise ConfigError(f"{n}.ref_warp: must be one of {REF_WARPS}, got {self.ref_warp!r}")
        chans = [self.base_channels * m for m in self.ch_mult]
        _check_channels(n, chans, self.norm_groups, None)
        if self.mid_attention:  # the only attention sits at the lowest resolution
            _check_channels(n, chans[-1:], self.norm_groups, self.head_dim)


@dataclass
class UNetConfig(ConfigBase):
    """Fields shared by the content (2-D) and motion (factorised 3-D) UNets.

    Level i works at 1 / 2**i of the input resolution with model_channels * ch_mult[i] channels;
    `attn_levels` lists the levels that get spatial self-attention (the middle block always has it).
    """

    in_channels: int = 4  # latent channels
    model_channels: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_levels: tuple[int, ...] = (1, 2)
    head_dim: int = 32
    norm_groups: int = 8
    emb_mult: int = 4  # noise-embedding width = emb_mult * model_channels (modulation "embedding")
    dropout: float = 0.0
    preset: str = ""
    modulation: str = "embedding"  # one of MODULATIONS; part of what the weights mean

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def emb_dim(self) -> int:
        return self.emb_mult * self.model_channels

    def level_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.ch_mult]

    def validate(self) -> None:
        n = type(self).__name__
        _check_positive(n, in_channels=self.in_channels, model_channels=self.model_channels,
                        num_res_blocks=self.num_res_blocks, norm_groups=self.norm_groups,
                        emb_mult=self.emb_mult)
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ConfigError(f"{n}.ch_mult: must be a non-empty list of positive ints, got {self.ch_mult}")
        for lv in self.attn_levels:
            if not 0 <= lv < len(self.ch_mult):
                raise ConfigError(f"{n}.attn_levels: level {lv} outside 0..{len(self.ch_mult) - 1}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{n}.dropout: must be in [0, 1), got {self.dropout}")
        if self.modulation not in MODULATIONS:
            raise ConfigError(f"{n}.modulation: must be one of {', '.join(MODULATIONS)}, got {self.modulation!r}")
        chans = self.level_channels()
        # Decoder ResBlocks see concatenations of skip channels; those sums are multiples of
        # norm_groups whenever every level count is, so checking the levels is enough.
        _check_channels(n, chans, self.norm_groups, None)
        for lv in set(self.attn_levels) | {len(chans) - 1}:
            _check_channels(n, [chans[lv]], self.norm_groups, self.head_dim)


@dataclass
class ContentUNetConfig(UNetConfig):
    """2-D UNet denoiser for single latent frames (VIDM's content model)."""

    kind: ClassVar[str] = "content"

    num_classes: int = 0  # 0 = unconditional; labels in [0, num_classes], num_classes = "dropped"

    def validate(self) -> None:
        super().validate()
        if self.num_classes < 0:
            raise ConfigError(f"{type(self).__name__}.num_classes: must be >= 0, got {self.num_classes}")
        if self.num_classes and self.modulation == "positional":
            raise ConfigError(f"{type(self).__name__}: modulation 'positional' has no per-sample embedding to "
                              f"carry class labels; use num_classes=0 or modulation 'embedding'")


@dataclass
class MotionUNetConfig(UNetConfig):
    """Factorised 3-D UNet denoiser over a window of latent frames (VIDM's motion model)."""

    kind: ClassVar[str] = "motion"

    temporal_levels: tuple[int, ...] = (0, 1, 2)  # levels with temporal attention (+ middle block)
    time_max_period: float = 10000.0  # longest period of the sinusoidal frame-time encoding
    # Levels whose ResBlocks are each followed by full space-time attention over the window (on
    # top of the factorised blocks). Coarse levels only: the cost grows with (T*h*w)^2.
    spacetime_levels: tuple[int, ...] = ()
    # "known": the denoiser predicts the residual from the known frames' linear interpolation in
    # time (vidm.diffusion.prior); "none": plain EDM. Part of what the weights mean, so it lives here.
    prior_mean: str = "none"
    # VIDIM cascade: 0 = a motion model; k >= 2 = an upsampler at k times the base model's latent
    # size, whose input also takes the base video upsampled k times (in_channels more channels)
    # and its noise-augmentation level (1 channel): its only conditioning parameters.
    low_res_scale: int = 0

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        if isinstance(self.low_res_scale, bool) or not isinstance(self.low_res_scale, int) \
                or self.low_res_scale == 1 or self.low_res_scale < 0:
            raise ConfigError(f"{n}.low_res_scale: must be 0 (a motion model) or an integer >= 2, "
                              f"got {self.low_res_scale!r}")
        chans = self.level_channels()
        for name in ("temporal_levels", "spacetime_levels"):
            for lv in getattr(self, name):
                if not 0 <= lv < len(chans):
                    raise ConfigError(f"{n}.{name}: level {lv} outside 0..{len(chans) - 1}")
                _check_channels(n, [chans[lv]], self.norm_groups, self.head_dim)
        if self.prior_mean not in ("none", "known"):
            raise ConfigError(f"{n}.prior_mean: must be 'none' or 'known', got {self.prior_mean!r}")
        if not self.time_max_period > 1:
            raise ConfigError(f"{n}.time_max_period: must be > 1, got {self.time_max_period}")


__all__ = ["AutoencoderConfig", "UNetConfig", "ContentUNetConfig", "MotionUNetConfig",
           "SUPPORTED_HEAD_DIMS", "MODULATIONS"]
