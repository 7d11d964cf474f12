"""`SamplingOptions`: how one pipeline call samples (the settings every public method shares).

    opts = SamplingOptions(steps=10, seed=3)              # None: the pipeline's pipeline.json value
    pipe.interpolate(a, b, options=opts)                  # = pipe.interpolate(a, b, steps=10, seed=3)
    opts.resolve(pipe.config)                             # every blank filled in, every value checked
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vidm.errors import ConfigError

# How an interpolation samples its in-between windows (`VideoPipeline.interpolate(strategy=...)`):
# infill = the motion model conditioned on the known frames on both sides (RaMViD / VIDIM);
# bidirectional = a forward pass from the start fused at every step with the backward-motion
# stage's pass from the end (Generative Inbetweening); time-reversal = the same fusion with the
# motion model in both directions (TRF). See vidm.diffusion.bidirectional.
STRATEGIES = ("infill", "bidirectional", "time-reversal")


@dataclass(frozen=True)
class SamplingOptions:
    steps: int | None = None  # solver steps (None: config.steps)
    sampler: str | None = None  # a SAMPLERS name (None: config.sampler)
    guidance: float | None = None  # guidance on the input frames, 1 = off (None: config.guidance)
    seed: int = 0  # the generator seed; the same seed on the same device gives the same frames
    samples: int = 1  # draws per input (videos, for generation)
    progress: bool = False  # a progress bar over the solver steps

    def replace(self, **given) -> "SamplingOptions":
        """A copy with the `given` fields that are not None (a method's keyword arguments)."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def resolve(self, config) -> "SamplingOptions":
        """The options a call really uses: blanks from `config` (a PipelineConfig), every value
        checked (ConfigError naming it). Resolving resolved options changes nothing."""
        from vidm.diffusion import get_sampler

        steps = config.steps if self.steps is None else self.steps
        sampler = config.sampler if self.sampler is None else self.sampler
        guidance = config.guidance if self.guidance is None else self.guidance
        if not _is_int(steps) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.number)) or \
                not 0 <= float(guidance) < float("inf"):
            raise ConfigError(f"guidance must be a finite number >= 0, got {guidance!r}")
        if not _is_int(self.samples) or self.samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {self.samples!r}")
        get_sampler(sampler)  # raises on an unknown name
        return SamplingOptions(int(steps), sampler, float(guidance), int(self.seed), int(self.samples),
                               bool(self.progress))

    def settings(self) -> dict:
        """steps, sampler, guidance (of resolved options), for reports."""
        return {"steps": self.steps, "sampler": self.sampler, "guidance": self.guidance}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


__all__ = ["SamplingOptions", "STRATEGIES"]
