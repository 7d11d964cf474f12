"""save_pretrained / from_pretrained for every vidm model.

A model folder holds `config.json` = {"kind": <"autoencoder"|"content"|"motion">, "config": {...}}
and `model.safetensors`; the model is rebuilt from its own config, never unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidm.errors import CheckpointError, ConfigError
from vidm.serialization import CONFIG_NAME, load_model_dir, read_json, save_model_dir


class PretrainedMixin:
    """Mixed into nn.Modules that have a `config` (a ConfigBase dataclass) and `config_class`."""

    config_class: type

    def save_pretrained(self, dest: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the model folder atomically; `dtype` (e.g. torch.float16) casts the stored weights."""
        meta = {"kind": self.config_class.kind, "config": self.config.to_dict()}
        return save_model_dir(dest, meta, self.state_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, src: str | os.PathLike):
        """Rebuild from `src`/config.json and load the weights (fp16/bf16 files load into float32)."""
        meta, state = load_model_dir(src)
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind != cls.config_class.kind:
            raise CheckpointError(f"{Path(src) / CONFIG_NAME}: holds a {kind!r} model, "
                                  f"expected {cls.config_class.kind!r}")
        try:
            config = cls.config_class.from_dict(meta.get("config"))
        except ConfigError as e:
            raise CheckpointError(f"{Path(src) / CONFIG_NAME}: bad config ({e})") from None
        model = cls(config)
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(f"{src}: weights do not match the config "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise CheckpointError(f"{src}: weight {k} has shape {tuple(v.shape)}, "
                                      f"config gives {tuple(own[k].shape)}")
            state[k] = v.to(own[k].dtype)
        model.load_state_dict(state)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_pretrained(src: str | os.PathLike):
    """Load any vidm model folder, picking the class from its config.json "kind"."""
    from vidm.models import MODEL_CLASSES

    path = Path(src) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a vidm model folder)")
    meta = read_json(path)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in MODEL_CLASSES:
        raise CheckpointError(f"{Path(src) / CONFIG_NAME}: unknown model kind {kind!r}; "
                              f"expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[kind].from_pretrained(src)


__all__ = ["PretrainedMixin", "load_pretrained"]
