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


def latent_fingerprint(autoencoder) -> str:
    """A short hash of what makes an autoencoder's latents: its encoder's weights (rounded to
    float16, so an fp16 pipeline copy hashes the same as the fp32 run folder) and its
    `latent_scale`. The decoder is left out: training only the decoder (`run.trainable`) keeps
    the latents, and the fingerprint, unchanged."""
    import hashlib

    h = hashlib.sha256()
    h.update(repr(float(autoencoder.config.latent_scale)).encode())
    for name, t in sorted(autoencoder.state_dict().items()):
        if not name.startswith("encoder."):
            continue
        t = t.detach().cpu()
        if t.is_floating_point():  # -0.0 -> 0.0: an EMA of a frozen weight can flip the sign of a zero
            t = torch.where(t == 0, torch.zeros_like(t), t).to(torch.float16)
        h.update(name.encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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


__all__ = ["PretrainedMixin", "load_pretrained", "latent_fingerprint"]
