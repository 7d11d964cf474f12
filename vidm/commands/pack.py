"""`vidm pack`: assemble trained stage folders into one pipeline folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidm.errors import CheckpointError
from vidm.outputs import OutputPlan, add_overwrite_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack", help="assemble trained autoencoder, content and motion folders into one pipeline folder",
        description="Assemble three trained model folders (e.g. runs/NAME/model from each training stage) into one "
                    "pipeline folder for --model. Window length, frame size and time spacing are read from the "
                    "motion run's config.yaml (beside its model folder) unless given.")
    p.add_argument("--autoencoder", required=True, help="autoencoder model folder (or its run folder)")
    p.add_argument("--content", required=True, help="content model folder (or its run folder)")
    p.add_argument("--motion", required=True, help="motion model folder (or its run folder)")
    p.add_argument("-o", "--output", required=True, help="pipeline folder to write (written whole, at the end)")
    p.add_argument("--size", type=int, default=None, help="frame size the models were trained at")
    p.add_argument("--window", type=int, default=None, help="frames per motion window")
    p.add_argument("--context", type=int, default=None, help="frames carried into each new window (default window/2)")
    p.add_argument("--max-span", type=float, default=None, help="longest time span of a training window")
    p.add_argument("--fps", type=int, default=None, help="default output frame rate (default 8)")
    p.add_argument("--steps", type=int, default=None, help="default solver steps (default 20)")
    p.add_argument("--sampler", default=None, help="default sampler (default dpmpp_2m)")
    p.add_argument("--guidance", type=float, default=None, help="default guidance on input frames (default 1.5)")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default float16: half the size)")
    add_overwrite_arg(p)
    p.set_defaults(func=run_pack)


def _model_dir(path: str, stage: str) -> Path:
    p = Path(path)
    if (p / "model" / "config.json").is_file():  # a run folder
        p = p / "model"
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{path}: no {stage} model here (no config.json; give runs/NAME/model)")
    return p


def _run_config(model_dir: Path) -> dict:
    import yaml

    path = model_dir.parent / "config.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def pipeline_config_from_runs(motion_dir: Path, **overrides):
    """PipelineConfig from the motion run's training config, then explicit overrides."""
    from vidm.pipeline import PipelineConfig

    cfg = PipelineConfig()
    run = _run_config(motion_dir)
    data = run.get("data", {}) if isinstance(run, dict) else {}
    if "size" in data:
        cfg.size = int(data["size"])
    if "num_frames" in data:
        cfg.window = int(data["num_frames"])
    stride = data.get("stride", 1)
    stride_max = max(stride) if isinstance(stride, (list, tuple)) else stride
    cfg.max_span = float((cfg.window - 1) * stride_max)
    cfg.context = cfg.window // 2
    diffusion = run.get("diffusion", {}) if isinstance(run, dict) else {}
    if "sigma_data" in diffusion:
        cfg.sigma_data = float(diffusion["sigma_data"])
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    if overrides.get("window") is not None and overrides.get("context") is None:
        cfg.context = cfg.window // 2
    if overrides.get("window") is not None and overrides.get("max_span") is None:
        cfg.max_span = float((cfg.window - 1) * stride_max)
    return cfg


def run_pack(args) -> int:
    import torch

    from vidm.models import AutoencoderKL, ContentUNet, MotionUNet
    from vidm.pipeline import VideoPipeline

    dirs = {s: _model_dir(getattr(args, s), s) for s in ("autoencoder", "content", "motion")}
    plan = OutputPlan([getattr(args, s) for s in dirs] + list(dirs.values()), overwrite=args.overwrite)
    out = plan.folder(args.output, make_parents=True)
    plan.check()
    cfg = pipeline_config_from_runs(dirs["motion"], size=args.size, window=args.window, context=args.context,
                                    max_span=args.max_span, fps=args.fps, steps=args.steps, sampler=args.sampler,
                                    guidance=args.guidance)
    pipe = VideoPipeline(AutoencoderKL.from_pretrained(dirs["autoencoder"]), ContentUNet.from_pretrained(dirs["content"]),
                         MotionUNet.from_pretrained(dirs["motion"]), cfg, device="cpu", dtype="fp32")
    pipe._settings(None, None, None)  # validates the sampler name and steps
    with plan.write() as temp:
        pipe.save_pretrained(temp[out], weights_dtype=None if args.fp32 else torch.float16)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB; size {cfg.size}, window {cfg.window}, context {cfg.context}, "
          f"max span {cfg.max_span:g})")
    return 0
