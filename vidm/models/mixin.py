"""PretrainedMixin: save_pretrained / from_pretrained for every vidm model.

A model folder holds `config.json` = {"kind": <a model kind of vidm.stages>, "config": {...}}
and `model.safetensors`; the model is rebuilt from its own config, never unpickled. The model
classes import this module; `vidm.models.pretrained` (load_pretrained, which picks the class from
the folder's "kind") imports them, so neither imports the other back.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidm.errors import CheckpointError, ConfigError
from vidm.serialization import CONFIG_NAME, load_model_dir, save_model_dir


class PretrainedMixin:
    """Mixed into nn.Modules that have a `config` (a ConfigBase dataclass) and `config_class`."""

    config_class: type

    # How the weights were trained where that defines what they mean (sigma_data, frame size,
    # window, time spacing, the latents' scale and autoencoder): config.json's "training"
    # section, written by train/ at export, read back by from_pretrained and carried by every
    # later save (e.g. into a pipeline folder by `vidm pack`). None when unknown.
    training_record: dict | None = None

    def save_pretrained(self, dest: str | os.PathLike, dtype: torch.dtype | None = None,
                        training: dict | None = None) -> Path:
        """Write the model folder atomically; `dtype` (e.g. torch.float16) casts the stored weights.
        `training` (default: the model's `training_record`) becomes config.json's "training"."""
        meta = {"kind": self.config_class.kind, "config": self.config.to_dict()}
        record = training if training is not None else self.training_record
        if record is not None:
            meta["training"] = dict(record)
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
        record = meta.get("training")
        model.training_record = dict(record) if isinstance(record, dict) else None
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["PretrainedMixin"]
