"""Pipelines: generate, interpolate, upsample and predict videos with the stages' models (vidm.stages)."""

from vidm.pipeline.config import PipelineConfig
from vidm.pipeline.options import SamplingOptions
from vidm.pipeline.pipeline import VideoPipeline, default_model_dir

__all__ = ["VideoPipeline", "PipelineConfig", "SamplingOptions", "default_model_dir"]
