"""Helpers shared by the model tests."""

import pytest
import torch


def randomize_zero_init(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give the zero-initialised output layers random weights, so the net is not identically 0
    (a trained net's properties are what the tests check)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if (p == 0).all():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs on 2 shared cores: a second intra-op thread only adds contention (measured
    3-5x slower under load), so model tests run single-threaded and restore the setting. A test
    module takes it with `from model_helpers import one_thread`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train_in_process(main, argv) -> int:
    """A trainer's main(argv) in this process, accelerate's singleton state reset around it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        return main(argv)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def eval_interpolate(model_dir, data, out, methods: str, *extra: str, clips: int = 2) -> int:
    """`vidm eval interpolate` on `data` at gap 2, quiet and without a plot -> its exit code."""
    from vidm.cli import main

    return main(["eval", "interpolate", "--model", str(model_dir), "--data", str(data), "--gaps", "2",
                 "--clips", str(clips), "--methods", methods, "--no-plot", "--out", str(out), "--quiet", *extra])
