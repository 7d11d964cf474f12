"""Pipelines: generate, interpolate, upsample and predict videos with the three models."""

from vidm.pipeline.config import PipelineConfig
from vidm.pipeline.pipeline import VideoPipeline, default_model_dir

__all__ = ["VideoPipeline", "PipelineConfig", "default_model_dir"]
