"""Dispatch of kernels.attention / kernels.group_norm under VIDM_KERNELS, the torch-only
import without Triton, and a smoke run of the benchmark (`python -m kernels.bench`,
`vidm bench kernels`)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kernel_helpers import use_kernels
from vidm import kernels
from vidm.kernels._common import choose_provider, has_xformers, kernel_mode
from vidm.cli import main as vidm_main
from vidm.errors import ConfigError, ShapeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_choose_provider_table():
    # The pure rule, including the CUDA cases this CPU machine cannot build tensors for.
    pick = lambda mode, **kw: choose_provider(mode, **{  # noqa: E731
        "is_cuda": True, "triton_ok": True, "shape_ok": True, "fallbacks": ("xformers", "sdpa"), **kw})
    assert pick("auto") == "triton"
    assert pick("auto", shape_ok=False) == "xformers"  # e.g. head dim 48 on a GPU
    assert pick("auto", triton_ok=False) == "xformers"  # Triton not installed
    assert pick("auto", is_cuda=False, fallbacks=("sdpa",)) == "sdpa"
    assert pick("torch") == "sdpa"
    assert pick("triton", is_cuda=False, triton_ok=False, shape_ok=False) == "triton"  # its guards raise


@pytest.mark.parametrize("mode,attn,gn", [("auto", "sdpa", "torch"), ("torch", "sdpa", "torch"),
                                          ("triton", "triton", "triton"), ("", "sdpa", "torch")])
def test_providers_under_each_mode_on_cpu(monkeypatch, mode, attn, gn):
    use_kernels(monkeypatch, mode)
    q = torch.randn(1, 2, 8, 32)
    x = torch.randn(2, 32, 4, 4)
    assert kernels.attention_provider(q, q, q) == attn
    assert kernels.group_norm_provider(x) == gn


def test_settings_are_read_once_until_reset(monkeypatch):
    # VIDM_KERNELS and xformers' presence are looked up at the first dispatch, not at every call.
    import importlib.util

    use_kernels(monkeypatch, "torch")
    q = torch.randn(1, 2, 8, 32)
    assert kernels.attention_provider(q, q, q) == "sdpa"
    monkeypatch.setenv("VIDM_KERNELS", "triton")  # without reset_settings(): not seen
    assert kernel_mode() == "torch" and kernels.attention_provider(q, q, q) == "sdpa"
    kernels.reset_settings()
    assert kernel_mode() == "triton" and kernels.attention_provider(q, q, q) == "triton"

    looked = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: looked.append(name) or real_find_spec(name, *a))
    kernels.reset_settings()
    first = has_xformers()
    assert [has_xformers() for _ in range(3)] == [first] * 3 and looked == ["xformers"]


def test_unknown_mode_raises(monkeypatch):
    use_kernels(monkeypatch, "cuda")
    q = torch.randn(1, 2, 8, 32)
    with pytest.raises(ConfigError, match="VIDM_KERNELS"):
        kernels.attention(q, q, q)


@pytest.mark.skipif(not kernels.INTERPRET, reason="needs Triton's interpreter on this machine")
def test_forced_triton_matches_torch(monkeypatch):
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    q, k, v = (torch.randn(1, 2, 20, 32, generator=g) for _ in range(3))
    x = torch.randn(1, 32, 5, 5, generator=g)
    w, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    sc, sh = torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g)
    use_kernels(monkeypatch, "torch")
    a_torch = kernels.attention(q, k, v, causal=True)
    g_torch = kernels.group_norm(x, 8, w, b, sc, sh, act="silu")
    use_kernels(monkeypatch, "triton")
    torch.testing.assert_close(kernels.attention(q, k, v, causal=True), a_torch, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kernels.group_norm(x, 8, w, b, sc, sh, act="silu"), g_torch, rtol=1e-4, atol=1e-5)


def test_auto_falls_back_for_unsupported_head_dim_but_forced_triton_raises(monkeypatch):
    q = torch.randn(1, 2, 8, 48)
    use_kernels(monkeypatch, "auto")
    ref = F.scaled_dot_product_attention(q, q, q)
    torch.testing.assert_close(kernels.attention(q, q, q), ref)
    use_kernels(monkeypatch, "triton")
    with pytest.raises(ShapeError, match="head dim 48"):
        kernels.attention(q, q, q)


@pytest.mark.parametrize("mode", ["auto", "torch", "triton"])
def test_guards_raise_in_every_mode(monkeypatch, mode):
    use_kernels(monkeypatch, mode)
    with pytest.raises(ShapeError, match="not divisible"):
        kernels.group_norm(torch.randn(1, 30, 4, 4), 8, None, None)
    with pytest.raises(ShapeError, match="same shape"):
        kernels.attention(torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8, 32), torch.randn(1, 2, 9, 32))


def test_torch_fallback_matches_reference_5d_channels_last(monkeypatch):
    use_kernels(monkeypatch, "torch")
    x = torch.randn(2, 32, 3, 4, 4).to(memory_format=torch.channels_last_3d)
    w, b, sc, sh = torch.randn(32), torch.randn(32), torch.randn(2, 32), torch.randn(2, 32)
    ref = kernels.group_norm_reference(x, 8, w, b, sc, sh, act="silu")
    torch.testing.assert_close(kernels.group_norm(x, 8, w, b, sc, sh, act="silu").double(), ref,
                               rtol=1e-4, atol=1e-5)


def test_import_without_triton_uses_torch():
    # Simulate a machine with no Triton wheel (macOS, Windows): importing kernels must work
    # and everything runs on torch; forcing triton gives a clear error.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import os, torch\n"
        "from vidm import kernels\n"
        "assert not kernels.HAS_TRITON\n"
        "q = torch.randn(1, 2, 8, 32); x = torch.randn(1, 32, 4, 4)\n"
        "assert kernels.attention_provider(q, q, q) == 'sdpa'\n"
        "kernels.attention(q, q, q); kernels.group_norm(x, 8, None, None, act='silu')\n"
        "os.environ['VIDM_KERNELS'] = 'triton'; kernels.reset_settings()  # read once: forget the first read\n"
        "from vidm.errors import ConfigError\n"
        "try:\n    kernels.group_norm(x, 8, None, None)\nexcept ConfigError as e:\n    print('ok', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VIDM_KERNELS"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout and "not importable" in res.stdout


def test_bench_tiny_writes_json(tmp_path):
    from vidm.kernels.bench import run

    out = tmp_path / "sub" / "bench.json"
    lines = []
    report = run(preset="tiny", device="cpu", out=str(out), log=lines.append)
    data = json.loads(out.read_text())
    assert data["peaks"]["copy_GBps"] > 0 and data["peaks"]["matmul_TFLOPs"] > 0
    providers = {(r["op"], r["provider"]) for r in data["results"]}
    assert {("attention", "sdpa"), ("attention", "eager"), ("attention", "triton"),
            ("group_norm", "eager"), ("group_norm", "triton")} <= providers
    for r in data["results"]:
        if r["provider"] in ("sdpa", "eager"):
            assert r["fwd"]["ms"] > 0 and r["fwd+bwd"]["ms"] > 0
            assert r.get("rel_err_vs_sdpa", r.get("rel_err_vs_fp32_torch")) < 1e-4
        if r["provider"] == "triton":
            assert "skipped" in r  # CPU: no Triton timings
    text = "\n".join(lines)
    assert "Triton timings need a GPU" in text and "GB/s" in text and "TFLOP/s" in text
    assert report["results"] == data["results"]


def test_vidm_bench_kernels_cli(capsys):
    assert vidm_main(["bench", "kernels", "--help"]) == 0  # main returns argparse's exit status
    assert "--quick" in capsys.readouterr().out
    assert vidm_main(["bench", "kernels", "--ops", "convolution", "--device", "cpu"]) == 1
    assert "unknown op" in capsys.readouterr().err
