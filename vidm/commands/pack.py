"""`vidm pack`: assemble trained stage folders into one pipeline folder.

What the weights mean is fixed by how they were trained: the EDM `sigma_data` (content and
motion), the frame size, the motion window and the longest time span of a window (frame
spacing), and the autoencoder whose latents, at its `latent_scale`, both were trained on. Those
settings are read, per stage, from (first found):

1. the stage's own `config.json` "training" section (written by `train/` at every export, and
   carried into pipeline folders);
2. the run's `config.yaml` beside the model folder (runs made before training sections);
3. the `pipeline.json` of a pipeline folder the stage sits in (e.g. the bundled model's stages);
4. the command line (`--size`, `--window`, `--max-span`, `--sigma-data`): required when a stage
   has none of the above, and refused when it contradicts one.

Content and motion must agree with each other, and their latents must be the given
autoencoder's (same `latent_scale`, same encoder fingerprint where recorded).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vidm import args as argtypes
from vidm import stages as registry
from vidm.errors import CheckpointError, ConfigError
from vidm.outputs import OutputPlan, add_overwrite_arg

# The CLI flag of each setting a stage's record must give (the registry's StageSpec.settings).
FLAGS = {"sigma_data": "--sigma-data", "size": "--size", "window": "--window", "max_span": "--max-span"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack", help="assemble trained autoencoder, content and motion folders into one pipeline folder",
        description="Assemble three trained model folders (e.g. runs/NAME/model from each training stage) into one "
                    "pipeline folder for --model. The settings that define what the weights mean (sigma_data, "
                    "frame size, window, time span, the autoencoder's latents) are read from each stage's "
                    "config.json 'training' section, else its run's config.yaml, else the pipeline.json of the "
                    "pipeline folder it sits in; a stage with none of these needs them on the command line. "
                    "A value that contradicts a stage's record, or stages that disagree, are refused.")
    for stage in registry.all_stages():  # one flag per stage: --autoencoder, --content, --motion, ...
        p.add_argument(f"--{stage.name}", required=stage.required,
                       help=f"{stage.help} folder (or its run folder){'' if stage.required else '; optional'}")
    p.add_argument("-o", "--output", required=True, help="pipeline folder to write (written whole, at the end)")
    g = p.add_argument_group("training settings (read from the stages; give them only where a stage has no record)")
    g.add_argument("--size", type=argtypes.positive_int, default=None, help="frame size the models were trained at")
    g.add_argument("--window", type=argtypes.int_at_least(3), default=None, help="frames per motion window")
    g.add_argument("--max-span", type=argtypes.positive_float, default=None,
                   help="longest time span of a training window ((window - 1) x the largest frame stride)")
    g.add_argument("--sigma-data", type=argtypes.positive_float, default=None,
                   help="EDM sigma_data the content and motion models were trained with")
    s = p.add_argument_group("sampling defaults")
    s.add_argument("--context", type=argtypes.positive_int, default=None,
                   help="frames carried into each new window, 1 to window-1 (default window/2)")
    s.add_argument("--frame-step", type=argtypes.positive_float, default=None,
                   help="model time units between output frames (default 1: one source frame)")
    s.add_argument("--fps", type=argtypes.positive_float, default=None, help="default output frame rate (default 8)")
    s.add_argument("--steps", type=argtypes.int_at_least(1, 10000), default=None, help="default solver steps (default 20)")
    s.add_argument("--sampler", default=None, help="default sampler (default dpmpp_2m)")
    s.add_argument("--guidance", type=argtypes.float_in(0.0, 100.0), default=None,
                   help="default guidance on input frames, 0 to 100 (default 1.5)")
    s.add_argument("--decode-latent-sigma", type=argtypes.float_in(0.0), default=None,
                   help="how unsure a reference decoder should take the sampled latents to be: higher leans "
                        "more on the reference pixels (default 0)")
    s.add_argument("--cascade-aug", type=argtypes.float_in(0.0, 0.999), default=None,
                   help="noise-augmentation level in [0, 1) of the upsampler's low-resolution condition at sampling "
                        "(with --upsampler; default 0.1)")
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
    try:
        run = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return run if isinstance(run, dict) else {}


def _from_run_config(model_dir: Path, stage: str) -> dict | None:
    """The defining settings of a run made before config.json had a training section."""
    run = _run_config(model_dir)
    if not run:
        return None
    data = run.get("data") if isinstance(run.get("data"), dict) else {}
    diffusion = run.get("diffusion") if isinstance(run.get("diffusion"), dict) else {}
    rec = {"sigma_data": diffusion.get("sigma_data", 0.5), "size": data.get("size", 64)}
    if registry.get(stage).kind == "motion":
        window = data.get("num_frames", 8)
        stride = data.get("stride", 1)
        stride_max = max(stride) if isinstance(stride, (list, tuple)) else stride
        try:
            rec.update(window=window, stride=stride, max_span=float((int(window) - 1) * int(stride_max)),
                       frame_step=1.0)
        except (TypeError, ValueError):
            raise CheckpointError(f"{model_dir.parent / 'config.yaml'}: data.num_frames / data.stride are not "
                                  f"integers") from None
    return rec


def _from_pipeline(model_dir: Path, stage: str) -> dict | None:
    """The settings of the pipeline folder a stage folder sits in (e.g. vidm/pretrained/NAME/motion)."""
    from vidm.pipeline import PipelineConfig

    if model_dir.name not in registry.names() or not (model_dir.parent / "pipeline.json").is_file():
        return None
    cfg = PipelineConfig.load(model_dir.parent)
    rec = {k: getattr(cfg, k) for k in registry.get(stage).settings}
    if "window" in rec:
        rec["frame_step"] = cfg.frame_step
    return rec


def stage_record(model, model_dir: Path, stage: str) -> tuple[dict, str]:
    """(record, where it came from) of a content or motion model; ({}, "") when none is found."""
    if isinstance(model.training_record, dict):
        return dict(model.training_record), f"{model_dir / 'config.json'} (training)"
    rec = _from_run_config(model_dir, stage)
    if rec is not None:
        return rec, str(model_dir.parent / "config.yaml")
    rec = _from_pipeline(model_dir, stage)
    if rec is not None:
        return rec, str(model_dir.parent / "pipeline.json")
    return {}, ""


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def resolve_settings(records: dict[str, tuple[dict, str]], given: dict) -> dict:
    """The defining settings from the stages' records ({stage: (record, where)}, the stages with
    registry `settings`: content, motion, ...) and the command line (`given`: name -> value or
    None), or a ConfigError naming what is missing or contradicts."""
    out: dict = {}
    first: dict[str, tuple[str, str]] = {}  # setting -> (stage, where) its value was first read from
    for stage in records:
        rec, where = records[stage]
        defining = registry.get(stage).settings
        missing = [k for k in defining if k not in rec and given.get(k) is None]
        if missing:
            raise ConfigError(
                f"--{stage}: no record of how the model was trained (no 'training' section in its config.json, "
                f"no config.yaml beside it, no pipeline.json above it); give "
                f"{' '.join(f'{FLAGS[k]} VALUE' for k in missing)} explicitly" if not rec else
                f"--{stage}: {where} does not say {', '.join(missing)}; give "
                f"{' '.join(f'{FLAGS[k]} VALUE' for k in missing)}")
        for k in defining:
            mine = rec.get(k)
            if mine is not None and given.get(k) is not None and not _same(mine, given[k]):
                raise ConfigError(f"{FLAGS[k]} {_fmt(given[k])}: the {stage} model was trained with {k} {_fmt(mine)} "
                                  f"({where}); packing it with another value changes what its weights mean")
            value = given[k] if given.get(k) is not None else mine
            if k in out and not _same(out[k], value):
                other, other_where = first[k]
                raise ConfigError(f"the {other} and {stage} models disagree on {k}: {_fmt(out[k])} ({other_where}) "
                                  f"vs {_fmt(value)} ({where or 'the command line'}); they cannot share one pipeline")
            out[k] = value
            first.setdefault(k, (stage, where or "the command line"))
    out["frame_step"] = records["motion"][0].get("frame_step", 1.0)
    return out


def check_latents(records: dict[str, tuple[dict, str]], autoencoder, ae_dir: Path) -> list[str]:
    """Refuse content / motion trained on another autoencoder's latents; returns notes on what
    could not be checked."""
    from vidm.models.pretrained import latent_fingerprint

    scale = float(autoencoder.config.latent_scale)
    fingerprint = None
    unchecked = []
    for stage, (rec, where) in records.items():
        theirs = rec.get("latent_scale")
        if theirs is not None and not _same(theirs, scale):
            raise ConfigError(f"--{stage}: trained on latents scaled by {_fmt(theirs)} ({where}), but the autoencoder "
                              f"{ae_dir} has latent_scale {scale:g}: it was trained on another autoencoder's latents")
        if rec.get("autoencoder") is not None:
            fingerprint = fingerprint or latent_fingerprint(autoencoder)
            if rec["autoencoder"] != fingerprint:
                raise ConfigError(f"--{stage}: trained on the latents of another autoencoder (fingerprint "
                                  f"{rec['autoencoder']} in {where}; {ae_dir} has {fingerprint})")
        elif theirs is None:
            unchecked.append(stage)
    return unchecked


def check_upsampler(models: dict, records: dict[str, tuple[dict, str]], size: int) -> None:
    """Refuse an --upsampler that is a plain motion model, or one trained at another frame size
    than the pipeline's times its scale."""
    if "upsampler" not in models:
        return
    k = models["upsampler"].config.low_res_scale
    if not k:
        raise ConfigError("--upsampler: this is a plain motion model (low_res_scale 0), not a cascade upsampler "
                          "(train one with `vidm train upsampler`)")
    rec, where = records["upsampler"]
    if rec.get("size") is not None and int(rec["size"]) != size * k:
        raise ConfigError(f"--upsampler: trained at frame size {rec['size']} ({where}), but a scale-{k} upsampler of "
                          f"this size-{size} pipeline works at {size * k}")


def run_pack(args) -> int:
    import dataclasses

    import torch

    from vidm.pipeline import PipelineConfig, SamplingOptions, VideoPipeline

    dirs = {s.name: _model_dir(getattr(args, s.name), s.name) for s in registry.all_stages()
            if getattr(args, s.name) is not None}
    plan = OutputPlan([getattr(args, s) for s in dirs] + list(dirs.values()), overwrite=args.overwrite)
    out = plan.folder(args.output, make_parents=True)
    plan.check()
    models = {name: registry.get(name).model_class().from_pretrained(d) for name, d in dirs.items()}
    ae = models["autoencoder"]
    records = {name: stage_record(model, dirs[name], name) for name, model in models.items()
               if registry.get(name).settings}
    settings = resolve_settings(records, {"sigma_data": args.sigma_data, "size": args.size, "window": args.window,
                                          "max_span": args.max_span})
    unchecked = check_latents(records, ae, dirs["autoencoder"])
    cfg = dataclasses.replace(PipelineConfig(), **settings)
    cfg.context = cfg.window // 2 if args.context is None else args.context
    check_upsampler(models, records, cfg.size)
    for name in ("frame_step", "fps", "steps", "sampler", "guidance", "decode_latent_sigma", "cascade_aug"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.validate("vidm pack")  # e.g. --context 99 for a 9-frame window, before any weights are written
    for stage, (rec, where) in records.items():  # the record travels with the stage
        model = models[stage]
        keys = registry.get(stage).settings + (("frame_step",) if "window" in registry.get(stage).settings else ())
        model.training_record = {**rec, "stage": stage, **{k: settings[k] for k in keys},
                                 **({} if model.training_record else {"from": where or "vidm pack command line"})}
    required = {name: models.pop(name) for name in registry.names(required=True)}
    pipe = VideoPipeline(**required, config=cfg, device="cpu", dtype="fp32", stages=models)
    SamplingOptions().resolve(pipe.config)  # validates the sampler name and steps
    with plan.write() as temp:
        pipe.save_pretrained(temp[out], weights_dtype=None if args.fp32 else torch.float16)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    note = f"; not checked against the autoencoder: {' and '.join(unchecked)} (no record)" if unchecked else ""
    print(f"wrote {out} ({size / 1e6:.1f} MB; size {cfg.size}, window {cfg.window}, context {cfg.context}, "
          f"max span {cfg.max_span:g}, sigma_data {cfg.sigma_data:g}{note})")
    return 0
