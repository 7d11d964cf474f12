"""The one training loop shared by the autoencoder, content and motion stages.

A stage (train/autoencoder.py, content.py, motion.py) says how to build its model and data and
how to compute a loss and a preview; this file does the rest: accelerate (devices, DDP, mixed
precision), Adam/AdamW with linear warm-up, grad-norm clipping, EMA, deterministic per-step
batches, TensorBoard, validation, atomic checkpoints, exact resume, signals and NaN stops.

Run folder (`run.output_dir/run.name`):
    config.yaml          the resolved config of the latest start/resume
    metrics.jsonl        one line per logged step: step, loss, lr, grad_norm, samples_per_sec, ...
                         (on a GPU also max_mem_gib, the peak of torch's allocated memory so far)
    tb/                  TensorBoard events (scalars, preview images)
    samples/             preview images / GIFs (step-XXXXXXX-*.png|gif)
    checkpoints/step-XXXXXXX/   full training state (train/checkpoint.py)
    model/               the EMA model: config.json + model.safetensors (from_pretrained)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from vidm.errors import ConfigError, TrainingError, VidmError


# ----------------------------------------------------------------------------- stage API


class Stage:
    """What a training stage provides. `setup` raises VidmError on bad input (before training)."""

    name = "stage"
    kind = ""  # the model kind of `net` (config.json "kind", what run.init_from must hold); "" = name
    config_cls: type = object
    # DDP must be told when some parameters can go unused in a step (costs a graph traversal).
    find_unused_parameters = False
    samples_per_item = 1  # "samples" in samples/s per example (the autoencoder counts frames)

    def __init__(self, cfg, accelerator, src: str = "config"):
        self.cfg = cfg
        self.src = src  # the config file, named in error messages
        self.accelerator = accelerator
        self.device = accelerator.device

    # -- built by setup()
    net = None  # the nn.Module that is EMA'd and exported (has save_pretrained)
    train_set = None  # Dataset over keys (index, item_seed) -> example
    num_train = 0
    val_set = None
    num_val = 0

    def setup(self) -> None:
        raise NotImplementedError

    def training_record(self) -> dict[str, Any] | None:
        """config.json's "training" section of the exported model: the settings that define what
        the weights mean, read by `vidm pack` (None: nothing to record)."""
        return None

    def model_config(self) -> dict[str, Any]:
        """The exported model's config (a checkpoint only resumes with an equal one)."""
        return self.net.config.to_dict()

    def wrap(self, net):
        """The module the loss calls (e.g. Denoiser(net)); prepared (DDP) for training."""
        return net

    def collate(self, items: list[dict]) -> dict:
        import torch

        out = {}
        for k in items[0]:
            vals = [it[k] for it in items]
            out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
        return out

    def to_device(self, batch: dict) -> dict:
        import torch

        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def loss(self, module, batch: dict, generator) -> tuple[Any, dict[str, float]]:
        """(scalar loss tensor, extra scalars to log) for one micro-batch."""
        raise NotImplementedError

    def preview(self, net, batch: dict, generator) -> list[tuple[str, str, Any]]:
        """[(tag, "image" | "video", tensor in [0, 1])]: image (3, H, W), video (T, 3, H, W)."""
        return []

    # -- hooks the loop calls; the defaults do nothing

    def before_export(self, net) -> None:
        """On the main process, before each export of the EMA model `net` to RUN/model (after
        its checkpoint is written): e.g. measure something the exported config records."""

    def on_train_end(self, run_dir: Path, sampler) -> None:
        """On every process when the loop ends (done, stopped by a signal, or failed), after the
        logs are closed. `sampler` (train/batches.py StepBatchSampler) says which examples each
        step took on this process. Tests override it to look at each rank's result."""


# ----------------------------------------------------------------------------- CLI


def build_arg_parser(stage: str) -> argparse.ArgumentParser:
    from vidm.args import Parser  # usage errors: one line, exit status 1, as for `vidm`

    p = Parser(
        prog=f"train.{stage}",
        description=f"Train the {stage} model (also under `accelerate launch -m` / `torchrun -m`).",
    )
    p.add_argument("--config", required=True, help=f"YAML config, e.g. configs/{stage}/tiny.yaml")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue a run: 'auto' = latest complete checkpoint of this run (fresh start if none)")
    p.add_argument("--name", default=None, help="run name (overrides run.name): folder run.output_dir/NAME")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides of the YAML, e.g. optim.lr=1e-4 data.root=/videos")
    return p


def main(stage_cls, argv: list[str] | None = None) -> int:
    """Entry point of `python -m train.<stage>`; returns the exit code."""
    # intermixed: overrides may come before or after --resume/--name
    try:
        args = build_arg_parser(stage_cls.name).parse_intermixed_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (said in one line)
        return e.code if isinstance(e.code, int) else 1
    try:
        return train(stage_cls, args)
    except VidmError as e:
        print(f"train.{stage_cls.name}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as e:  # a second Ctrl-C (or one before the loop's handler is set)
        where = f"; {e.where}" if isinstance(e, _Abort) else ""
        print(f"train.{stage_cls.name}: interrupted; stopped at once without saving{where}", file=sys.stderr,
              flush=True)
        return 128 + signal.SIGINT


# ----------------------------------------------------------------------------- the loop


class _Abort(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without saving (`where` names the last complete checkpoint)."""

    def __init__(self, where: str = ""):
        super().__init__(where)
        self.where = where


def _say(text: str) -> None:
    """One line on stderr, safe inside a signal handler (no buffered stream, which the main
    thread may be writing to: a reentrant write raises)."""
    os.write(2, (text.rstrip("\n") + "\n").encode())


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves, and exits 0.

    The step in progress gets `grace` seconds (run.stop_timeout; 0 = however long it takes):
    one that has not finished by then (a huge batch, a hung data read) is abandoned, the process
    exits at once with status 128 + the signal number and one line naming the last complete
    checkpoint, which is kept as it was (checkpoints are written to a temp folder and renamed,
    so no half-written one is ever left in its place). A second Ctrl-C stops at once the same
    way (status 130) without waiting for anything.
    """

    def __init__(self, name: str = "stage", grace: float = 0.0, last_checkpoint=None):
        self.received: int | None = None
        self._old = {}
        self.name = name
        self.grace = grace
        self.last_checkpoint = last_checkpoint or (lambda: "no checkpoint was written")
        self.step = 0  # the step in progress (1-based), for messages
        self._timer = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                self.disarm()
                raise _Abort(self.last_checkpoint())  # a second Ctrl-C stops at once
            return  # already stopping
        self.received = signum
        wait = f"up to {self.grace:g} s" if self.grace > 0 else "however long it takes"
        _say(f"train.{self.name}: {signal.Signals(signum).name} received; finishing step {self.step} "
             f"({wait}), then saving (Ctrl-C again stops at once without saving)")
        if self.grace > 0:
            import threading

            self._timer = threading.Timer(self.grace, self._expired, args=(signum,))
            self._timer.daemon = True
            self._timer.start()

    def _expired(self, signum: int) -> None:
        if self._timer is None:
            return
        _say(f"train.{self.name}: step {self.step} did not finish within {self.grace:g} s of "
             f"{signal.Signals(signum).name}; exiting without saving it ({self.last_checkpoint()})")
        os._exit(128 + signum)

    def disarm(self) -> None:
        """The step is over (the save comes next): no more deadline."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def restore(self) -> None:
        self.disarm()
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _available_memory(device) -> int | None:
    """Bytes free for a step on `device`: free GPU memory, or the host's MemAvailable (tests
    replace this function to pretend a machine has little)."""
    import torch

    if torch.device(device).type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    from vidm.video import host_available_memory

    return host_available_memory()


def _estimate_step_memory(stage: "Stage", cfg, accelerator) -> tuple[int, int]:
    """(bytes per example, bytes independent of the batch) of one training step, estimated from
    one forward pass on one example: the outputs of every layer (what backward keeps, roughly)
    plus the example itself; and the parameters 5 times over (weights, gradients, two Adam
    moments, the EMA copy). No state changes: the RNG is restored and nothing is trained."""
    import torch

    from .batches import step_generator

    net = stage.net
    total = [0]

    def hook(module, inputs, output):
        for t in (output if isinstance(output, (tuple, list)) else (output,)):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
            example = stage.collate([stage.train_set[(0, 0)]])
            data = sum(v.numel() * v.element_size() for v in example.values() if isinstance(v, torch.Tensor))
            batch = stage.to_device(example)
            with torch.no_grad(), accelerator.autocast():
                stage.loss(stage.wrap(net), batch, step_generator(cfg.run.seed, 0, 0, 0))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() * 4 for p in net.parameters())
    return total[0] + data, 5 * params


def _check_batch(stage: "Stage", cfg, accelerator, world: int, src: str) -> None:
    """Before step 1, one line each: a global batch larger than the training set, and a step that
    looks too big for the memory there is (an estimate; training still starts)."""
    if not accelerator.is_main_process:
        return
    name, d = stage.name, cfg.data
    global_batch = d.batch_size * world * cfg.run.grad_accum
    if global_batch > stage.num_train:
        print(f"train.{name}: warning: a step takes {global_batch} examples (data.batch_size {d.batch_size}"
              f"{f' x {world} processes' if world > 1 else ''}{f' x run.grad_accum {cfg.run.grad_accum}' if cfg.run.grad_accum > 1 else ''}), "
              f"more than the {stage.num_train} training examples: every step repeats examples", file=sys.stderr,
              flush=True)
    try:
        per_example, fixed = _estimate_step_memory(stage, cfg, accelerator)
    except Exception as e:  # an estimate must never stop training; the step itself will say what is wrong
        print(f"train.{name}: could not estimate the memory of a step ({type(e).__name__}: {e})", file=sys.stderr)
        return
    need = fixed + per_example * d.batch_size
    have = _available_memory(accelerator.device)
    if have is not None and need > have:
        fit = max(0, (have - fixed) // max(per_example, 1))
        print(f"train.{name}: warning: a step of data.batch_size {d.batch_size} needs about {need / 2**30:.1f} GiB "
              f"(estimated), more than the {have / 2**30:.1f} GiB available on {accelerator.device}; about {fit} "
              f"examples fit (lower data.batch_size, raising run.grad_accum for the same global batch)",
              file=sys.stderr, flush=True)


def _lr_factor(warmup: int):
    def factor(step: int) -> float:  # LambdaLR calls it with the number of optimizer steps taken
        return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)

    return factor


def train(stage_cls, args) -> int:
    """Run a stage's training as `args` say; 0 when it finished or saved and stopped on a signal."""
    run = _setup(stage_cls, args)
    return _loop(run)


class _Run:
    """The state of one training run, shared by the setup / step / log / checkpoint pieces below.

    `__init__` holds what follows from the config and the processes; the `_setup_*` pieces fill
    in the rest, in an order that matters for exact resume (what consumes the global RNG runs
    after the checkpoint's RNG states are loaded)."""

    def __init__(self, cfg, src: str, accelerator):
        self.cfg = cfg
        self.src = src  # the config file, named in error messages
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.run_dir = Path(cfg.run.output_dir) / cfg.run.name
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.global_batch = cfg.data.batch_size * self.world * cfg.run.grad_accum
        self.clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        self.writer = None  # TensorBoard, on the main process only
        self.preview_batch = None  # made at the first preview

    # -- filled in by _setup_stage / _setup_optimization / _setup_data / _setup_logs
    stage: Stage
    net: Any  # stage.net: the module that is trained, EMA'd and exported
    model_config: dict
    resume_from: Path | None
    start_step: int
    step: int  # optimizer steps taken so far
    last_saved: int | None  # the step of the last checkpoint this process wrote or resumed from
    exported: int | None = None  # the step whose EMA model this process last wrote to RUN/model
    module: Any  # stage.wrap(net), prepared (DDP)
    optimizer: Any
    scheduler: Any
    ema: Any
    sampler: Any  # StepBatchSampler
    data_iter: Any
    val_keys: list
    bar: Any  # tqdm
    signals: _Signals


# ----------------------------------------------------------------------------- setup


def _setup(stage_cls, args) -> _Run:
    """Everything before step 1; all that can fail on bad input fails here, before any training."""
    cfg = _load_run_config(stage_cls, args)
    run = _Run(cfg, args.config, _make_accelerator(cfg, stage_cls, args.config))
    _setup_stage(run, stage_cls, args.resume)
    _setup_optimization(run)
    _setup_data(run)
    _setup_logs(run)
    return run


def _load_run_config(stage_cls, args):
    from .config import load_config

    cfg = load_config(stage_cls.config_cls, args.config, args.overrides)
    if cfg.stage != stage_cls.name:
        raise ConfigError(f"{args.config}: config is for stage {cfg.stage!r}, not {stage_cls.name!r}")
    if args.name is not None:
        cfg.run.name = args.name
    _check_run_config(cfg, args.config)
    return cfg


def _make_accelerator(cfg, stage_cls, src: str):
    """The Accelerator, after resolving run.mixed_precision=auto for the device used."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    use_cpu = cfg.run.cpu or not torch.cuda.is_available()
    if cfg.run.mixed_precision == "auto":
        from vidm.models.precision import autocast_dtype

        amp = autocast_dtype("cpu" if use_cpu else "cuda")
        cfg.run.mixed_precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "no")
    if cfg.run.mixed_precision == "fp16" and use_cpu:
        raise ConfigError(f"{src}: run.mixed_precision=fp16 needs a GPU; use bf16 or no on a CPU")
    # accelerate only joins torchrun's CPU processes (gloo) when told cpu=True.
    return Accelerator(
        mixed_precision=cfg.run.mixed_precision,
        cpu=use_cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=stage_cls.find_unused_parameters)],
    )


def _setup_stage(run: _Run, stage_cls, resume: str | None) -> None:
    """The stage's model and data, the resume point, run.init_from / run.trainable, config.yaml."""
    from .config import save_yaml

    cfg, src = run.cfg, run.src
    stage = run.stage = stage_cls(cfg, run.accelerator, src)
    stage.setup()
    if stage.num_train < 1:
        raise ConfigError(f"{src}: no training examples")
    run.net, run.model_config = stage.net, stage.model_config()
    _find_resume_point(run, resume)
    if cfg.run.init_from and run.resume_from is None:
        _init_from(stage.net, cfg.run.init_from, stage.kind or stage.name, run.model_config, src, cfg.run.init_skip)
        if run.is_main:
            print(f"train.{stage.name}: weights from {cfg.run.init_from}", file=sys.stderr)
    if run.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run.run_dir / "config.yaml")
    _freeze(stage.net, cfg.run.trainable, src, stage.name if run.is_main else None)
    _check_batch(stage, cfg, run.accelerator, run.world, src)


def _find_resume_point(run: _Run, resume: str | None) -> None:
    """run.resume_from / start_step from --resume; a run folder with checkpoints needs --resume."""
    from . import checkpoint as ckpt_lib

    run.resume_from = ckpt_lib.resolve_resume(resume, run.run_dir)
    run.start_step = 0
    if run.resume_from is not None:
        state = ckpt_lib.read_train_state(run.resume_from)
        ckpt_lib.check_same_model(run.resume_from, state, run.stage.name, run.model_config,
                                  run.stage.net.config.defaults())
        run.start_step = int(state["step"])
    elif resume is None and ckpt_lib.list_checkpoints(run.run_dir):
        raise ConfigError(
            f"{run.run_dir}: run folder already has checkpoints; pass --resume auto to continue it "
            f"or --name NEW for a new run"
        )
    run.step = run.start_step
    run.last_saved = run.start_step if run.resume_from is not None else None


def _setup_optimization(run: _Run) -> None:
    """Optimizer, LR schedule and EMA, prepared by accelerate; the checkpoint's state loaded."""
    import torch

    from .ema import EMA

    cfg, accelerator, net = run.cfg, run.accelerator, run.net
    torch.manual_seed(cfg.run.seed)  # stages seed their own init too; this covers the rest
    module = run.stage.wrap(net)
    opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    optimizer = opt_cls(net.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                        eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    # Not passed to accelerator.prepare: its wrapper steps the schedule once per process.
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg.optim.warmup_steps))
    run.module, run.optimizer = accelerator.prepare(module, optimizer)
    run.ema = EMA(net, cfg.ema.decay, cfg.ema.warmup).to(accelerator.device)
    accelerator.register_for_checkpointing(run.scheduler, run.ema)
    if run.resume_from is not None:
        accelerator.load_state(str(run.resume_from))
        if run.is_main:
            print(f"train.{run.stage.name}: resumed from {run.resume_from} at step {run.start_step}",
                  file=sys.stderr)


def _setup_data(run: _Run) -> None:
    """Which examples each step sees is a function of (seed, step) only; validation examples are
    spread evenly over the held-out set, with fixed seeds."""
    import torch

    from .batches import StepBatchSampler

    cfg, stage = run.cfg, run.stage
    run.sampler = StepBatchSampler(stage.num_train, cfg.data.batch_size, cfg.run.seed, run.rank, run.world,
                                   cfg.run.grad_accum, run.start_step, cfg.run.steps)
    loader = torch.utils.data.DataLoader(
        stage.train_set, batch_sampler=run.sampler, num_workers=cfg.data.num_workers,
        collate_fn=stage.collate, persistent_workers=False,
    )
    run.data_iter = iter(loader)  # draws a base seed from the global RNG: after load_state
    n_val = min(stage.num_val, cfg.data.batch_size * cfg.data.val_batches * run.world)
    run.val_keys = [(i * stage.num_val // n_val, 1000 + i) for i in range(n_val)] if n_val else []


def _setup_logs(run: _Run) -> None:
    """metrics.jsonl and TensorBoard (main process only), cut back to the resumed step; the bar."""
    from tqdm.auto import tqdm

    cfg = run.cfg
    if run.is_main:
        from torch.utils.tensorboard import SummaryWriter

        _truncate_metrics(run.metrics_path, run.start_step)
        # purge_step: TensorBoard drops events logged after the resumed step by the run that died.
        run.writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=run.start_step)
    run.bar = tqdm(total=cfg.run.steps, initial=run.start_step, desc=f"{run.stage.name} {cfg.run.name}",
                   unit="step", dynamic_ncols=True, disable=not (run.is_main and cfg.run.progress))


# ----------------------------------------------------------------------------- the steps


def _loop(run: _Run) -> int:
    """Steps until run.steps, logging, validating and checkpointing on the way. A signal ends it
    after the step in progress, saved (0); the last step is always saved."""
    cfg = run.cfg
    run.signals = _Signals(run.stage.name, cfg.run.stop_timeout, lambda: _last_checkpoint(run))
    run.signals.install()
    meter = _Throughput(run.global_batch, run.stage.samples_per_item)
    try:
        while run.step < cfg.run.steps:
            run.signals.step = run.step + 1
            rec = _train_step(run)
            meter.tick(run.step == cfg.run.steps)
            _log_step(run, rec, meter)
            _evaluate(run)
            stop = _stop_requested(run)
            if _checkpoint_due(run) or stop:
                _save(run)
            if stop:
                if run.is_main:
                    run.bar.close()
                    print(f"train.{run.stage.name}: signal received; saved step {run.step} to {run.run_dir}, "
                          f"exiting", file=sys.stderr, flush=True)
                return 0
        if run.last_saved != run.step:
            _save(run)
        elif run.exported != run.step:  # resumed at the last step: RUN/model may be another step's, or absent
            _export(run)
    finally:
        _close(run)
    if run.is_main:
        print(f"train.{run.stage.name}: done, {run.step} steps; EMA model in {run.run_dir / 'model'}",
              file=sys.stderr)
    return 0


class _StepResult(NamedTuple):
    """What a step logs (lr: the rate the step used; extras: the stage's scalars)."""

    loss: float
    lr: float
    grad_norm: float
    step_time: float
    extras: dict[str, float]


def _train_step(run: _Run) -> _StepResult:
    """One optimizer step (run.grad_accum micro-batches). A non-finite loss or gradient norm
    stops training before the weights change (TrainingError)."""
    t0 = time.perf_counter()
    loss_value, extras = _accumulate_gradients(run)
    grad_norm = float(run.accelerator.clip_grad_norm_(run.net.parameters(), run.clip))
    _check_finite(run, loss_value, grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.ema.update(run.net)
    run.step += 1
    return _StepResult(loss_value, lr, grad_norm, time.perf_counter() - t0, extras)


def _accumulate_gradients(run: _Run) -> tuple[float, dict[str, float]]:
    """Forward and backward over this step's micro-batches (gradients synced on the last one only):
    (mean loss over them and the processes, the stage's extra scalars averaged over them)."""
    import torch

    from .batches import step_generator

    cfg, accelerator, module = run.cfg, run.accelerator, run.module
    module.train()
    losses, extras = [], {}
    for micro in range(cfg.run.grad_accum):
        batch = run.stage.to_device(next(run.data_iter))
        g = step_generator(cfg.run.seed, run.step, micro, run.rank)
        sync = micro == cfg.run.grad_accum - 1
        with (nullcontext() if sync else accelerator.no_sync(module)):
            with accelerator.autocast():
                loss, extra = run.stage.loss(module, batch, g)
            accelerator.backward(loss / cfg.run.grad_accum)
        losses.append(loss.detach().float())
        for k, v in extra.items():
            extras[k] = extras.get(k, 0.0) + float(v) / cfg.run.grad_accum
    loss_mean = torch.stack(losses).mean()
    if run.world > 1:
        loss_mean = accelerator.reduce(loss_mean, "mean")
    return float(loss_mean), extras


def _check_finite(run: _Run, loss_value: float, grad_norm: float) -> None:
    """A NaN/inf loss (or gradient norm: fp16's scaler skips those steps itself) stops the run."""
    from . import checkpoint as ckpt_lib

    if math.isfinite(loss_value) and (math.isfinite(grad_norm) or run.cfg.run.mixed_precision == "fp16"):
        return
    what = "loss" if not math.isfinite(loss_value) else "gradient norm"
    kept = ckpt_lib.list_checkpoints(run.run_dir)
    where = f"last good checkpoint: {kept[-1]}" if kept else "no checkpoint was written"
    raise TrainingError(
        f"non-finite {what} ({loss_value if what == 'loss' else grad_norm}) at step {run.step + 1}; "
        f"stopped without updating the weights ({where})"
    )


def _stop_requested(run: _Run) -> bool:
    """Whether a signal reached any process (all stop together); disarms its deadline if so."""
    import torch

    stop = run.signals.received is not None
    if run.world > 1:
        flag = torch.tensor([1.0 if stop else 0.0], device=run.accelerator.device)
        stop = bool(run.accelerator.reduce(flag, "sum").item() > 0)
    if stop:
        run.signals.disarm()  # the step is done: the save that follows is not cut short
    return stop


# ----------------------------------------------------------------------------- logs


class _Throughput:
    """samples/s and steps/s over windows of at least 2 s (and up to the last step): a single
    step's rate is too noisy to read. Between updates the last window's rates are reported."""

    def __init__(self, global_batch: int, samples_per_item: int):
        self.global_batch, self.samples_per_item = global_batch, samples_per_item
        self.window_t, self.window_steps = time.perf_counter(), 0
        self.samples_per_sec = self.steps_per_sec = 0.0

    def tick(self, last: bool) -> None:
        """One step done (`last`: the run's final one, which closes the window)."""
        self.window_steps += 1
        now = time.perf_counter()
        if now - self.window_t >= 2.0 or last:
            self.steps_per_sec = self.window_steps / (now - self.window_t)
            self.samples_per_sec = self.steps_per_sec * self.global_batch * self.samples_per_item
            self.window_t, self.window_steps = now, 0


def _log_step(run: _Run, out: _StepResult, meter: _Throughput) -> None:
    """The progress bar, and every run.log_every steps (and the last) a metrics.jsonl line and
    TensorBoard scalars (main process only)."""
    import torch

    cfg, step = run.cfg, run.step
    if not run.is_main:
        return
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{out.loss:.4f}", samples_s=f"{meter.samples_per_sec:.1f}", refresh=False)
    if not (step % cfg.run.log_every == 0 or step == cfg.run.steps):
        return
    rec = {"step": step, "loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
           "samples_per_sec": meter.samples_per_sec, "steps_per_sec": meter.steps_per_sec,
           "step_time": out.step_time, **out.extras}
    if run.accelerator.device.type == "cuda":  # peak so far (the GPU check reports it)
        rec["max_mem_gib"] = torch.cuda.max_memory_allocated(run.accelerator.device) / 2**30
    _append_metrics(run, rec)
    for k, v in rec.items():
        if k != "step":
            run.writer.add_scalar(f"train/{k}", v, step)


def _append_metrics(run: _Run, rec: dict) -> None:
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _evaluate(run: _Run) -> None:
    """Validation loss every run.val_every steps (all processes take part) and preview samples
    every run.sample_every steps and at the last (main process only), both of the EMA model."""
    cfg, step, stage = run.cfg, run.step, run.stage
    if cfg.run.val_every and step % cfg.run.val_every == 0 and stage.num_val:
        val = _validate(stage, run.ema.model, run.val_keys, cfg, run.accelerator)
        if run.is_main:
            run.writer.add_scalar("val/loss", val, step)
            _append_metrics(run, {"step": step, "val_loss": val})
    if run.is_main and cfg.run.sample_every and (step % cfg.run.sample_every == 0 or step == cfg.run.steps):
        if run.preview_batch is None:
            run.preview_batch = _preview_batch(stage, cfg)
        _log_preview(stage, run.ema.model, run.preview_batch, cfg, run.writer, run.run_dir, step)


def _close(run: _Run) -> None:
    """However the loop ended: old signal handlers back, logs flushed, then the stage's hook."""
    run.signals.restore()
    run.bar.close()
    if run.writer is not None:
        run.writer.flush()
        run.writer.close()
    run.stage.on_train_end(run.run_dir, run.sampler)


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint_due(run: _Run) -> bool:
    """Every run.checkpoint_every steps (0: never) and at the last step."""
    every, step = run.cfg.run.checkpoint_every, run.step
    return bool(every and step % every == 0) or step == run.cfg.run.steps


def _train_state(run: _Run, step: int) -> dict:
    """train_state.json of a checkpoint: what resume checks and where the data stands."""
    from .config import to_dict

    return {
        "step": step, "stage": run.stage.name, "model_config": run.model_config,
        "world_size": run.world, "global_batch": run.global_batch,
        "samples_seen": step * run.global_batch, "data_position": step * run.global_batch,
        "seed": run.cfg.run.seed, "config": to_dict(run.cfg),
    }


def _save(run: _Run) -> Path:
    """Collective: checkpoint the current step, then (main process) export the EMA model."""
    from . import checkpoint as ckpt_lib

    step = run.step
    path = ckpt_lib.save_checkpoint(run.accelerator, run.run_dir, step, _train_state(run, step),
                                    run.cfg.run.keep_checkpoints)
    _export(run)
    run.last_saved = step
    return path


def _export(run: _Run) -> None:
    """Collective: (main process) the EMA model of the current step to RUN/model."""
    if run.is_main:
        run.stage.before_export(run.ema.model)
        run.ema.model.save_pretrained(run.run_dir / "model", training=run.stage.training_record())
    run.accelerator.wait_for_everyone()
    run.exported = run.step


def _last_checkpoint(run: _Run) -> str:
    """For the messages of a stop without saving."""
    from . import checkpoint as ckpt_lib

    kept = ckpt_lib.list_checkpoints(run.run_dir)
    return f"last complete checkpoint: {kept[-1]}" if kept else "no checkpoint was written"




def _check_run_config(cfg, src: str) -> None:
    r, d = cfg.run, cfg.data
    for name, v, lo in (("run.steps", r.steps, 1), ("run.grad_accum", r.grad_accum, 1),
                        ("run.log_every", r.log_every, 1), ("data.batch_size", d.batch_size, 1),
                        ("run.keep_checkpoints", r.keep_checkpoints, 1), ("data.num_workers", d.num_workers, 0),
                        ("run.sample_every", r.sample_every, 0), ("run.val_every", r.val_every, 0),
                        ("run.checkpoint_every", r.checkpoint_every, 0), ("data.val_clips", d.val_clips, 0)):
        if v < lo:
            raise ConfigError(f"{src}: {name} must be >= {lo}, got {v}")
    if not 0.0 <= cfg.ema.decay < 1.0:
        raise ConfigError(f"{src}: ema.decay must be in [0, 1), got {cfg.ema.decay}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"{src}: optim.lr must be > 0, got {cfg.optim.lr}")
    if not 0 <= r.seed <= 2**63 - 1:
        raise ConfigError(f"{src}: run.seed must be an integer from 0 to 2**63-1, got {r.seed}")
    if not (r.stop_timeout >= 0 and math.isfinite(r.stop_timeout)):
        raise ConfigError(f"{src}: run.stop_timeout must be a finite number of seconds >= 0, got {r.stop_timeout}")
    if not r.name or "/" in r.name:
        raise ConfigError(f"{src}: run.name must be a plain folder name, got {r.name!r}")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after `step` (by a run killed after its last checkpoint)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            pass  # a torn last line
    path.write_text("".join(line + "\n" for line in keep))


def _freeze(net, trainable: tuple[str, ...], src: str, log_name: str | None) -> None:
    """Leave only the parameters named by a `trainable` prefix trainable (all when empty)."""
    if not trainable:
        return
    names = [n for n, _ in net.named_parameters()]
    unused = [p for p in trainable if not any(n.startswith(p) for n in names)]
    if unused:
        raise ConfigError(f"{src}: run.trainable: no parameter starts with {unused[0]!r}")
    n_train = 0
    for n, p in net.named_parameters():
        p.requires_grad_(any(n.startswith(t) for t in trainable))
        n_train += p.numel() if p.requires_grad else 0
    if log_name:
        print(f"train.{log_name}: run.trainable: {n_train:,} of {sum(p.numel() for p in net.parameters()):,} "
              f"parameters train, the rest are frozen", file=sys.stderr)


def _init_from(net, path: str, kind: str, model_config: dict, src: str, skip: tuple[str, ...] = ()) -> None:
    """Load a model folder's weights into `net` (run.init_from).

    Every tensor of the folder must fit a tensor of `net` (same name and shape). `net` may have
    more: a grown model (e.g. added `spacetime_levels`) keeps its fresh initialisation there,
    and its zero-initialised output layers make it start out computing what the folder's model
    did. Anything else that differs is a one-line error naming the differing config key.
    Tensors whose names start with a prefix in `skip` are not loaded (fresh init) and need not fit.
    """
    from .checkpoint import config_difference
    from vidm.models.pretrained import load_pretrained

    try:
        loaded = load_pretrained(path)
    except VidmError as e:
        raise ConfigError(f"{src}: run.init_from: {e}") from None
    if loaded.config_class.kind != kind:
        raise ConfigError(f"{src}: run.init_from: {path} holds a {loaded.config_class.kind} model, not {kind}")
    theirs, ours = loaded.state_dict(), net.state_dict()
    skipped = {k for k in theirs if k.startswith(tuple(skip))} if skip else set()
    # skipped tensors need not fit: that is how a part whose shape changed starts afresh
    fits = all(k in ours and ours[k].shape == v.shape for k, v in theirs.items() if k not in skipped)
    diff = config_difference(loaded.config.to_dict(), model_config)
    if not fits:
        raise ConfigError(f"{src}: run.init_from: {path} holds a model with another config than this run's "
                          f"model section ({diff}) whose weights do not fit")
    unused = [p for p in skip if not any(k.startswith(p) for k in theirs)]
    if unused:
        raise ConfigError(f"{src}: run.init_skip: no weight of {path} starts with {unused[0]!r}")
    net.load_state_dict({k: v for k, v in theirs.items() if k not in skipped}, strict=False)
    new = sorted(set(ours) - set(theirs))
    if new:
        print(f"train.{kind}: run.init_from: {len(new)} tensors are new in this run's model ({diff}) and keep "
              f"their initialisation", file=sys.stderr)
    elif diff:
        print(f"train.{kind}: run.init_from: the weights fit; config differs ({diff})", file=sys.stderr)
    if skipped:
        print(f"train.{kind}: run.init_from: {len(skipped)} tensors skipped (run.init_skip), fresh init",
              file=sys.stderr)


def _validate(stage: Stage, net, val_keys, cfg, accelerator) -> float:
    """Mean loss of the EMA model on the held-out clips (fixed noise, so steps compare)."""
    import torch

    from .batches import step_generator

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = val_keys[rank::world][: cfg.data.batch_size * cfg.data.val_batches]
    module = stage.wrap(net)
    total = torch.zeros(2, device=accelerator.device)
    with torch.no_grad():
        for i in range(0, len(mine), cfg.data.batch_size):
            keys = mine[i : i + cfg.data.batch_size]
            batch = stage.to_device(stage.collate([stage.val_set[k] for k in keys]))
            g = step_generator(cfg.run.seed + 7919, i, 0, rank)
            with accelerator.autocast():
                loss, _ = stage.loss(module, batch, g)
            total += torch.stack([loss.detach().float() * len(keys), torch.tensor(float(len(keys)), device=total.device)])
    if world > 1:
        total = accelerator.reduce(total, "sum")
    return float(total[0] / total[1].clamp(min=1))


def _preview_batch(stage: Stage, cfg) -> dict:
    n = cfg.diffusion.num_samples if hasattr(cfg, "diffusion") else min(8, cfg.data.batch_size)
    if stage.num_val:
        ds, count = stage.val_set, stage.num_val
    else:
        ds, count = stage.train_set, stage.num_train
    keys = [(i % count, 2000 + i) for i in range(n)]
    return stage.to_device(stage.collate([ds[k] for k in keys]))


def _log_preview(stage: Stage, net, batch, cfg, writer, run_dir: Path, step: int) -> None:
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(cfg.run.seed + 31)
    with torch.no_grad():
        items = stage.preview(net, batch, g)
    out = run_dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for tag, kind, x in items:
        x = x.detach().float().clamp(0, 1).cpu()
        if kind == "image":
            writer.add_image(f"samples/{tag}", x, step)
            _save_png(out / f"step-{step:07d}-{tag}.png", x)
        else:  # video (T, 3, H, W): a frame strip in TensorBoard, a GIF on disk
            strip = torch.cat(list(x), dim=2)
            writer.add_image(f"samples/{tag}", strip, step)
            try:
                from vidm.video import write_video

                frames = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
                write_video(out / f"step-{step:07d}-{tag}.gif", frames, fps=4)
            except Exception as e:  # a preview must never stop training
                print(f"train: could not write preview GIF ({e})", file=sys.stderr)
    writer.flush()


def _save_png(path: Path, x) -> None:
    import numpy as np
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)
