"""The pipeline folder's own settings (`pipeline.json`): how the three models work together."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from vidm.errors import CheckpointError, ConfigError
from vidm.serialization import read_json

PIPELINE_NAME = "pipeline.json"
FORMAT = "vidm-pipeline-1"
STAGES = ("autoencoder", "content", "motion")
INFILL_INITS = ("splat", "noise")


@dataclass
class PipelineConfig:
    size: int = 64  # frame size the models were trained at (square)
    window: int = 9  # frames per motion window (the motion model's training clip length)
    context: int = 4  # frames carried into each new window when continuing a video
    frame_step: float = 1.0  # model time units between consecutive output frames
    max_span: float = 16.0  # longest time span of one training window (times are compressed to it)
    fps: int = 8
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

    def validate(self, where: str = PIPELINE_NAME) -> "PipelineConfig":
        """Raise ConfigError (one line) on settings no sampler can use; returns self."""
        if self.infill_init not in INFILL_INITS:
            raise ConfigError(f"{where}: infill_init must be one of {', '.join(INFILL_INITS)}, "
                              f"got {self.infill_init!r}")
        if not 0 < self.infill_sigma <= self.sigma_max:
            raise ConfigError(f"{where}: infill_sigma must be in (0, sigma_max = {self.sigma_max}], "
                              f"got {self.infill_sigma}")
        if not 0 <= self.decode_latent_sigma < float("inf"):
            raise ConfigError(f"{where}: decode_latent_sigma must be a finite number >= 0, "
                              f"got {self.decode_latent_sigma}")
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = PIPELINE_NAME) -> "PipelineConfig":
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
