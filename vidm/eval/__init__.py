"""Evaluation: frame/video metrics, FVD with a user-supplied I3D, object-position error on
synthetic videos, and classical interpolation baselines with the pipeline's interface.

OpenCV (extras `eval`/`dev`) is needed only by the flow-based pieces (warping error, the "flow"
baseline, blob selection in the position metric) and is imported when they run.
"""

from vidm.eval.baselines import BASELINES, crossfade, flow_interpolate, get_baseline, interpolation_times
from vidm.eval.fvd import FVD_SIZE, fvd, i3d_features, preprocess_for_i3d
from vidm.eval.i3d import InceptionI3d, load_i3d
from vidm.eval.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    psnr,
    sqrtm_psd,
    ssim,
    warping_error,
)
from vidm.eval.positions import PositionError, detect_centroids, load_synth_meta, object_position_error

__all__ = [
    "BASELINES", "FVD_SIZE", "InceptionI3d", "PositionError", "crossfade", "detect_centroids",
    "feature_statistics", "flow_interpolate", "frechet_distance", "frechet_distance_from_features",
    "fvd", "get_baseline", "i3d_features", "interpolation_times", "load_i3d", "load_synth_meta",
    "object_position_error", "preprocess_for_i3d", "psnr", "sqrtm_psd", "ssim", "warping_error",
]  # fmt: skip
