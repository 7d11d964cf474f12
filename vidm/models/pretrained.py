"""Loading any vidm model folder (`load_pretrained`) and the autoencoder's latent fingerprint;
save_pretrained / from_pretrained themselves are `PretrainedMixin`'s (vidm/models/mixin.py,
re-exported here).

A model folder holds `config.json` = {"kind": <a model kind of vidm.stages>, "config": {...}}
and `model.safetensors`; the model is rebuilt from its own config, never unpickled. The class
for a kind comes from the stage registry (vidm.stages, which imports it by name on first use).
This module imports modules, never the `vidm.models` package namespace: no import circle
(tests/test_structure.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidm import stages
from vidm.errors import CheckpointError
from vidm.models.mixin import PretrainedMixin
from vidm.serialization import CONFIG_NAME, read_json


def latent_fingerprint(autoencoder) -> str:
    """A short hash of what makes an autoencoder's latents: its encoder's weights (rounded to
    float16, so an fp16 pipeline copy hashes the same as the fp32 run folder) and its
    `latent_scale`. The decoder is left out: training only the decoder (`run.trainable`) keeps
    the latents, and the fingerprint, unchanged."""
    import hashlib

    h = hashlib.sha256()
    h.update(repr(float(autoencoder.config.latent_scale)).encode())
    _hash_weights(h, autoencoder, "encoder.")
    return h.hexdigest()[:16]


def weights_fingerprint(model) -> str:
    """A short hash of all of a model's weights (rounded to float16, as `latent_fingerprint`):
    the same for a run's model folder and its fp16 copy in a pipeline folder. The backward-motion
    fine-tune records its forward model's, which must be the one its maps come from."""
    import hashlib

    h = hashlib.sha256()
    _hash_weights(h, model, "")
    return h.hexdigest()[:16]


def _hash_weights(h, model, prefix: str) -> None:
    for name, t in sorted(model.state_dict().items()):
        if not name.startswith(prefix):
            continue
        t = t.detach().cpu()
        if t.is_floating_point():  # -0.0 -> 0.0: an EMA of a frozen weight can flip the sign of a zero
            t = torch.where(t == 0, torch.zeros_like(t), t).to(torch.float16)
        h.update(name.encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def load_pretrained(src: str | os.PathLike):
    """Load any vidm model folder, picking the class from its config.json "kind"."""
    path = Path(src) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a vidm model folder)")
    meta = read_json(path)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in stages.kinds():
        raise CheckpointError(f"{Path(src) / CONFIG_NAME}: unknown model kind {kind!r}; "
                              f"expected one of {sorted(stages.kinds())}")
    return stages.for_kind(kind).model_class().from_pretrained(src)


__all__ = ["PretrainedMixin", "load_pretrained", "latent_fingerprint", "weights_fingerprint"]
