"""Model folders: `config.json` + `model.safetensors`, written atomically.

A model folder is rebuilt from its own config (`from_pretrained`), never from pickled modules.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vidm.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def atomic_write_dir(dest: str | os.PathLike, write_fn) -> Path:
    """Call `write_fn(tmp_dir)` to fill a temp folder beside `dest`, then swap it into place.

    A crash at any point leaves either the old `dest` or the new one, never a half-written one.
    An existing `dest` is replaced only when it is vidm's own (see `vidm.outputs.replace_folder`):
    a folder holding files vidm did not write is an OutputError and stays as it was.
    """
    from vidm.outputs import replace_folder, usual_modes

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write_fn(tmp)
        usual_modes(tmp)  # mkdtemp made it 0700 and safetensors writes 0600: others could not read them
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        # legacy: a model or run folder written before output markers (e.g. runs/NAME/model of a
        # run being resumed) is still replaced when it holds nothing but the files written now.
        replace_folder(tmp, dest, legacy=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def save_model_dir(dest: str | os.PathLike, config: dict[str, Any], state_dict: dict, dtype=None) -> Path:
    """Write `config.json` and `model.safetensors` (optionally cast to `dtype`) atomically."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()

    def write(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(tmp / WEIGHTS_NAME))

    return atomic_write_dir(dest, write)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in a checkpoint's file; a damaged file is a one-line CheckpointError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def load_model_dir(src: str | os.PathLike) -> tuple[dict[str, Any], dict]:
    """Read a model folder; returns (config dict, state dict of float32-or-original tensors)."""
    from safetensors.torch import load_file

    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: model folder not found")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (src / name).is_file():
            raise CheckpointError(f"{src}: missing {name}")
    config = read_json(src / CONFIG_NAME)
    try:
        state = load_file(str(src / WEIGHTS_NAME))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{src / WEIGHTS_NAME}: unreadable ({e})") from None
    return config, state
