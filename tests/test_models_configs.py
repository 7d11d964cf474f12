"""Model configs, presets and save/load of model folders."""

import json

import pytest
import torch

from vidm.errors import CheckpointError, ConfigError
from vidm.models import (AutoencoderConfig, AutoencoderKL, ContentUNet, ContentUNetConfig, MotionUNet,
                         MotionUNetConfig, build_model, get_preset, load_pretrained, preset_names)


from model_helpers import one_thread  # noqa: F401  (autouse: one torch thread)


@pytest.mark.parametrize("kind", ["autoencoder", "content", "motion"])
def test_presets_round_trip(kind):
    assert preset_names(kind) == ["base", "tiny"]
    for name in ("tiny", "base"):
        cfg = get_preset(kind, name)
        assert cfg.preset == name and cfg.kind == kind
        d = json.loads(json.dumps(cfg.to_dict()))  # plain JSON types
        assert type(cfg).from_dict(d) == cfg
    assert get_preset(kind, "tiny") is not get_preset(kind, "tiny")  # fresh copies


def test_unknown_names_and_keys_raise():
    with pytest.raises(ConfigError, match="unknown content preset 'huge'"):
        get_preset("content", "huge")
    with pytest.raises(ConfigError, match="unknown model kind"):
        get_preset("vae", "tiny")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['chanels'\]"):
        ContentUNetConfig.from_dict({"chanels": 3})
    with pytest.raises(ConfigError, match="expected an integer"):
        MotionUNetConfig.from_dict({"model_channels": "32"})
    with pytest.raises(ConfigError, match="expected a list of integers"):
        MotionUNetConfig.from_dict({"ch_mult": 2})
    with pytest.raises(ConfigError, match="head_dim"):
        MotionUNetConfig(head_dim=24)
    with pytest.raises(ConfigError, match="norm_groups"):
        ContentUNetConfig(model_channels=36, norm_groups=8)
    with pytest.raises(ConfigError, match="temporal_levels"):
        MotionUNetConfig(temporal_levels=(5,))
    with pytest.raises(ConfigError, match="spacetime_levels"):
        MotionUNetConfig(spacetime_levels=(3,))
    # Configs written before spacetime_levels existed still load (no space-time blocks).
    assert MotionUNetConfig.from_dict({"model_channels": 32}).spacetime_levels == ()
    with pytest.raises(ConfigError, match="modulation: must be one of embedding, positional, got 'film'"):
        MotionUNetConfig.from_dict({"modulation": "film"})
    with pytest.raises(ConfigError, match="expected a string"):
        ContentUNetConfig.from_dict({"modulation": 1})
    # ... and before modulation existed: the per-sample noise embedding, as those weights mean.
    for cls in (ContentUNetConfig, MotionUNetConfig):
        assert cls.from_dict({"model_channels": 32}).modulation == "embedding"
        assert cls.defaults()["modulation"] == "embedding"
    with pytest.raises(ConfigError, match="needs a MotionUNetConfig"):
        build_model("motion", ContentUNetConfig())


def test_tiny_param_budgets():
    n = {k: build_model(k, "tiny").num_parameters() for k in ("autoencoder", "content", "motion")}
    assert 1e6 <= n["content"] <= 3e6
    assert 2e6 <= n["motion"] <= 6e6
    assert n["autoencoder"] <= 3e6


def _small(kind, modulation="embedding"):
    if kind == "autoencoder":
        return AutoencoderKL(AutoencoderConfig(base_channels=16, ch_mult=(1, 2), downsample_factor=2))
    common = dict(model_channels=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), head_dim=16, norm_groups=4,
                  modulation=modulation)
    if kind == "content":  # positional modulation has no per-sample embedding for labels
        return ContentUNet(ContentUNetConfig(num_classes=2 if modulation == "embedding" else 0, **common))
    return MotionUNet(MotionUNetConfig(temporal_levels=(0, 1), **common))


def _run(model, kind):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if kind == "autoencoder":
            return model(torch.randn(2, 3, 8, 8, generator=g), sample_posterior=False)[0]
        if kind == "content":
            labels = torch.tensor([0, 2]) if model.config.num_classes else None
            return model(torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, generator=g), labels)
        return model(torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, generator=g),
                     known=torch.tensor([[True, False, False], [False, False, True]]),
                     times=torch.tensor([[0.0, 1.0, 2.5], [0.0, 3.0, 4.0]]), anchor=torch.randn(2, 4, 8, 8, generator=g))


@pytest.mark.parametrize("kind,modulation", [("autoencoder", "embedding"), ("content", "embedding"),
                                             ("motion", "embedding"), ("content", "positional"),
                                             ("motion", "positional")])
def test_save_load_identical_outputs(tmp_path, kind, modulation):
    torch.manual_seed(0)
    model = _small(kind, modulation).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # make the zero-init output layers non-trivial
    model.config.preset = "custom"
    out = _run(model, kind)
    assert out.abs().max() > 0
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["kind"] == kind and meta["config"]["preset"] == "custom"
    assert meta["config"].get("modulation", "embedding") == modulation

    loaded = type(model).from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert torch.equal(_run(loaded, kind), out)
    assert type(load_pretrained(tmp_path / "m")) is type(model)

    # fp16 on disk -> float32 modules, outputs close
    model.save_pretrained(tmp_path / "h", dtype=torch.float16)
    half = type(model).from_pretrained(tmp_path / "h").eval()
    assert all(p.dtype == torch.float32 for p in half.parameters())
    torch.testing.assert_close(_run(half, kind), out, atol=0.05, rtol=0.05)


def test_from_pretrained_checks_kind_and_config(tmp_path):
    content = _small("content")
    content.save_pretrained(tmp_path / "c")
    with pytest.raises(CheckpointError, match="holds a 'content' model, expected 'motion'"):
        MotionUNet.from_pretrained(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["config"]["bogus"] = 1
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bad config"):
        ContentUNet.from_pretrained(tmp_path / "c")
    meta["config"].pop("bogus")
    meta["config"]["num_classes"] = 5  # weights no longer match the config
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="label_embed"):
        ContentUNet.from_pretrained(tmp_path / "c")
    with pytest.raises(CheckpointError, match="not found"):
        ContentUNet.from_pretrained(tmp_path / "missing")
