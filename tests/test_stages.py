"""The stage registry (vidm.stages): one place that says per stage kind its model, config,
presets and trainer; pipeline folders with the required stages and optional ones."""

import dataclasses
import importlib
import json
import shutil

import numpy as np
import pytest

from vidm import stages
from vidm.cli import main
from vidm.errors import CheckpointError, ConfigError
from vidm.models import AutoencoderKL, ContentUNet, MotionUNet, build_model, get_preset, preset_names
from vidm.pipeline import PipelineConfig, VideoPipeline
from vidm.pipeline.pipeline import resolve_model

BUNDLED = resolve_model("synth-tiny")
SAMPLE = dict(steps=2, seed=5)


def _one_line_error(rc, capsys, needle):
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and needle in err, err


def _samples(pipe):
    video = pipe.generate(num_frames=5, num_videos=1, **SAMPLE)
    between = pipe.interpolate(video[0, 0], video[0, -1], num_frames=2, **SAMPLE)
    return video, between


@pytest.fixture(scope="module")
def bundled_samples():
    return _samples(VideoPipeline.from_pretrained(BUNDLED, dtype="fp32"))


def test_every_stage_names_matching_classes():
    assert stages.names(required=True) == ("autoencoder", "content", "motion")
    assert len(set(stages.names())) == len(stages.names())  # a name is a folder and a flag: once each
    for spec in stages.all_stages():
        cls, config_cls = spec.model_class(), spec.config_class()
        assert cls.config_class is config_cls and config_cls.kind == spec.kind
        for preset in preset_names(spec.name):
            assert isinstance(get_preset(spec.name, preset), config_cls)
        assert isinstance(build_model(spec.name, "tiny"), cls)
        if spec.trainer:
            assert callable(importlib.import_module(spec.trainer).main)
            assert spec.train_config_class()().stage == spec.name
    with pytest.raises(ConfigError, match="unknown stage 'refiner'"):
        stages.get("refiner")


def test_an_old_three_stage_folder_loads_and_samples_as_before(bundled_samples):
    # What loading was before the registry: the three classes by hand.
    old = VideoPipeline(AutoencoderKL.from_pretrained(BUNDLED / "autoencoder"),
                        ContentUNet.from_pretrained(BUNDLED / "content"),
                        MotionUNet.from_pretrained(BUNDLED / "motion"),
                        PipelineConfig.load(BUNDLED), dtype="fp32")
    for a, b in zip(_samples(old), bundled_samples):
        np.testing.assert_array_equal(a, b)
    assert tuple(VideoPipeline.from_pretrained(BUNDLED, dtype="fp32").stages) == stages.names(required=True)


def test_a_stage_given_the_wrong_model_is_refused():
    motion = MotionUNet.from_pretrained(BUNDLED / "motion")
    with pytest.raises(ConfigError, match="the content stage takes a ContentUNet, got MotionUNet"):
        VideoPipeline(AutoencoderKL.from_pretrained(BUNDLED / "autoencoder"), motion, motion)


def test_a_folder_with_a_stage_this_vidm_does_not_know_is_refused(tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(BUNDLED, folder)
    shutil.copytree(BUNDLED / "motion", folder / "mystery")
    with pytest.raises(CheckpointError, match="unknown stage folder mystery/"):
        VideoPipeline.from_pretrained(folder)


@pytest.fixture
def extra_stage(monkeypatch):
    """An optional stage registered the way a new one would be: one StageSpec."""
    motion = stages.get("motion")
    extra = dataclasses.replace(motion, name="extra", kind="motion", help="extra motion model", required=False,
                                trainer=None, train_config=None)
    monkeypatch.setattr(stages, "STAGES", stages.STAGES + (extra,))
    return extra


def _pack_args(root):
    return [x for s in stages.names(required=True) for x in (f"--{s}", str(root / s))]


def test_an_optional_stage_packs_loads_and_saves(extra_stage, tmp_path, bundled_samples, capsys):
    out = tmp_path / "with-extra"
    assert main(["pack", *_pack_args(BUNDLED), "--extra", str(BUNDLED / "motion"), "-o", str(out)]) == 0
    assert json.loads((out / "extra" / "config.json").read_text())["kind"] == "motion"
    pipe = VideoPipeline.from_pretrained(out, dtype="fp32")
    assert tuple(pipe.stages) == ("autoencoder", "content", "motion", "extra") and pipe.has_stage("extra")
    for a, b in zip(_samples(pipe), bundled_samples):  # an unused optional stage changes nothing
        np.testing.assert_array_equal(a, b)
    again = pipe.save_pretrained(tmp_path / "saved")
    assert (again / "extra" / "model.safetensors").is_file()
    # Without it the folder is still whole: optional stages are loaded where present.
    without = tmp_path / "without"
    assert main(["pack", *_pack_args(BUNDLED), "-o", str(without)]) == 0
    assert not VideoPipeline.from_pretrained(without).has_stage("extra")
    # A stage whose record contradicts the others is refused like content vs motion.
    rc = main(["pack", *_pack_args(BUNDLED), "--extra", str(BUNDLED / "motion"), "--window", "5",
               "-o", str(tmp_path / "bad")])
    _one_line_error(rc, capsys, "the motion model was trained with window 9")
    assert not (tmp_path / "bad").exists()


def test_the_cli_lists_the_registry(extra_stage, capsys):
    assert main(["pack", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"--{name}" in text for name in stages.names())
    rc = main(["train", "extra"])  # registered, but with no trainer
    assert rc != 0
    err = capsys.readouterr().err
    assert "invalid choice" in err and "autoencoder" in err and "motion" in err
