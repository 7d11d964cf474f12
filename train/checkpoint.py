"""Training checkpoints: `runs/NAME/checkpoints/step-XXXXXXX/`, written atomically.

A checkpoint is accelerate's `save_state` (model, optimizer, registered objects: EMA and LR
scheduler, per-rank RNG states) plus our `train_state.json` (step, data position, the model
config it was made with). Everything goes into a hidden temp folder first, which is renamed
into place only when complete; a kill at any moment leaves the previous checkpoints intact, and
only folders named `step-XXXXXXX` (complete by construction) are ever resumed from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from vidm.errors import CheckpointError

STATE_NAME = "train_state.json"
_STEP_RE = re.compile(r"^step-(\d{7,})$")
# Test hook "STEP:SECONDS": sleep inside the write of checkpoint STEP, after its files are
# written and before the rename, so a test can SIGKILL the process mid-write.
SLEEP_ENV = "VIDM_TEST_CHECKPOINT_SLEEP"


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """`auto` -> the latest complete checkpoint of this run (None if there is none yet);
    a path -> that checkpoint (or the latest one inside a run or checkpoints folder)."""
    if resume is None:
        return None
    if resume == "auto":
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1] if ckpts else None
    p = Path(resume)
    if (p / STATE_NAME).is_file():
        return p
    for base in (p, p.parent):  # a run folder or its checkpoints/ folder
        ckpts = list_checkpoints(base)
        if ckpts:
            return ckpts[-1]
    raise CheckpointError(f"--resume {resume}: no complete checkpoint there (expected {STATE_NAME})")


def read_train_state(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / STATE_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None


def config_difference(old: dict[str, Any], new: dict[str, Any],
                      defaults: dict[str, Any] | None = None) -> str | None:
    """None if the model configs are equal, else the first differing key as
    "model.KEY: OLD there, NEW now" (for one-line errors). A key that `old` lacks (written
    before the field existed) counts as its value in `defaults`."""
    if defaults:
        old = {**{k: v for k, v in defaults.items() if k in new}, **old}
    if old == new:
        return None
    k = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return f"model.{k}: {old.get(k)!r} there, {new.get(k)!r} now"


def check_same_model(ckpt: str | Path, state: dict[str, Any], stage: str, model_config: dict[str, Any],
                     defaults: dict[str, Any] | None = None) -> None:
    """A checkpoint made for another stage or model config cannot be resumed (one-line error).
    `defaults`: the config class's field defaults, for checkpoints older than a field."""
    if state.get("stage") != stage:
        raise CheckpointError(f"{ckpt}: checkpoint is from stage {state.get('stage')!r}, not {stage!r}")
    diff = config_difference(state.get("model_config", {}), model_config, defaults)
    if diff:
        raise CheckpointError(
            f"{ckpt}: checkpoint has a different model config ({diff}); use the same model config or a new --name"
        )


def save_checkpoint(accelerator, run_dir: str | Path, step: int, train_state: dict[str, Any], keep: int) -> Path:
    """Collective: every rank calls it (accelerate writes per-rank RNG states)."""
    root = Path(run_dir) / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # left by a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps(train_state, indent=2, sort_keys=True) + "\n")
        _fsync_tree(tmp)
        hook = os.environ.get(SLEEP_ENV, "")
        if hook and int(hook.split(":")[0]) == step:
            time.sleep(float(hook.split(":")[1]))
        if final.exists():  # re-saving a step (e.g. a signal right after a periodic save)
            old = root / f".old-{checkpoint_name(step)}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(folder: Path) -> None:
    from vidm.outputs import usual_modes

    usual_modes(folder)  # safetensors writes 0600 files
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
