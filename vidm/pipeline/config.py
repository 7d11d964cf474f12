"""The pipeline folder's own settings (`pipeline.json`): how its models work together."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from vidm.errors import CheckpointError, ConfigError
from vidm.serialization import read_json

PIPELINE_NAME = "pipeline.json"
FORMAT = "vidm-pipeline-1"
INFILL_INITS = ("splat", "noise")
MAX_SIZE = 8192
MAX_WINDOW = 64  # frames per motion window; longer windows are not what any model was trained on
MAX_STEPS = 10000
MAX_GUIDANCE = 100.0


@dataclass
class PipelineConfig:
    size: int = 64  # frame size the models were trained at (square)
    window: int = 9  # frames per motion window (the motion model's training clip length)
    context: int = 4  # frames carried into each new window when continuing a video
    frame_step: float = 1.0  # model time units between consecutive output frames
    max_span: float = 16.0  # longest time span of one training window (times are compressed to it)
    fps: float = 8  # default output frame rate (an int or a float > 0)
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    steps: int = 20
    sampler: str = "dpmpp_2m"
    guidance: float = 1.5  # guidance on the input frames (VIDIM); 1 = off
    content_guidance: float = 1.0  # class guidance for a class-conditional content model
    # Where an in-between window's solver starts: "splat" = the end frames moved to each
    # in-between time by global matching (vidm.diffusion.splat) plus noise at infill_sigma, the
    # solver running from there down; "noise" = pure noise at sigma_max (the plain sampler).
    # Windows with frames to make past the last known frame (generate, predict) always use "noise".
    infill_init: str = "splat"
    infill_sigma: float = 0.5
    # Reference autoencoders only: how unsure the decoder is told the sampled latents are
    # (0 = exact, as a true frame's latent; larger = lean more on the reference frames' pixels).
    decode_latent_sigma: float = 0.0
    # Cascade upsampler only (interpolate(cascade=True)): the noise-conditioning augmentation
    # level in [0, 1) its low-resolution condition gets at sampling (vidm.diffusion.cascade; the
    # upsampler's training previews use this default too). A little noise hides the base model's
    # own artefacts without washing out its layout.
    cascade_aug: float = 0.1

    def validate(self, where: str = PIPELINE_NAME) -> "PipelineConfig":
        """Check the type and range of every field; raise ConfigError (one line, naming `where`
        and the field) on a value no sampler can use. Integers given for float fields become
        floats. Returns self."""
        from vidm.diffusion.samplers import SAMPLERS

        def bad(name: str, want: str):
            raise ConfigError(f"{where}: {name} must be {want}, got {getattr(self, name)!r}")

        def integer(name: str, lo: int, hi: int) -> int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(name, f"an integer from {lo} to {hi}")
            return v

        def number(name: str, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v > hi or v < lo or (lo_open and v == lo):
                rng = f"{'>' if lo_open else '>='} {lo:g}" + ("" if hi == math.inf else f" and <= {hi:g}")
                bad(name, f"a finite number {rng}")
            setattr(self, name, float(v) if name != "fps" or not isinstance(v, int) else v)
            return float(v)

        integer("size", 1, MAX_SIZE)
        window = integer("window", 3, MAX_WINDOW)
        integer("context", 1, window - 1)
        max_span = number("max_span", 0.0)
        number("frame_step", 0.0, max_span)
        number("fps", 0.0, 1000.0)
        number("sigma_data", 0.0)
        sigma_min = number("sigma_min", 0.0)
        number("sigma_max", sigma_min, 1e6)
        integer("steps", 1, MAX_STEPS)
        if not isinstance(self.sampler, str) or self.sampler not in SAMPLERS:
            bad("sampler", f"one of {', '.join(sorted(SAMPLERS))}")
        number("guidance", 0.0, MAX_GUIDANCE, lo_open=False)
        number("content_guidance", 0.0, MAX_GUIDANCE, lo_open=False)
        if self.infill_init not in INFILL_INITS:
            raise ConfigError(f"{where}: infill_init must be one of {', '.join(INFILL_INITS)}, "
                              f"got {self.infill_init!r}")
        v = self.infill_sigma
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= self.sigma_max:
            raise ConfigError(f"{where}: infill_sigma must be in (0, sigma_max = {self.sigma_max}], "
                              f"got {self.infill_sigma}")
        self.infill_sigma = float(v)
        v = self.decode_latent_sigma
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise ConfigError(f"{where}: decode_latent_sigma must be a finite number >= 0, "
                              f"got {self.decode_latent_sigma}")
        self.decode_latent_sigma = float(v)
        v = self.cascade_aug
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ConfigError(f"{where}: cascade_aug must be a number in [0, 1), got {self.cascade_aug!r}")
        self.cascade_aug = float(v)
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = PIPELINE_NAME) -> "PipelineConfig":
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected a JSON object of settings, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", None)
        if fmt != FORMAT:
            raise CheckpointError(f"{where}: format {fmt!r}, expected {FORMAT!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"{where}: unknown keys {unknown}")
        return cls(**d).validate(where)

    def save(self, folder: Path) -> None:
        (Path(folder) / PIPELINE_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "PipelineConfig":
        path = Path(folder) / PIPELINE_NAME
        if not path.is_file():
            raise CheckpointError(f"{folder}: not a pipeline folder (missing {PIPELINE_NAME})")
        return cls.from_dict(read_json(path), str(path))
