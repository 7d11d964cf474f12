"""Package boundaries: no import circle in vidm, kernels/ and train/; importing the kernels sets no
environment variable; vidm.models.pretrained imports only modules, never a package's namespace;
only `vidm` is installed at the top level (the checkout's kernels/ and train/ install as
`vidm.kernels` and `vidm.train`), so another distribution's `kernels` or `train` cannot clash.

The import graph is read from the source with `ast`, one node per module (a package is its
`__init__`), one edge per import statement anywhere in the file: at module level, inside
functions (lazy imports still run, and a lazy import back into a module is how a circle hides)
and under `if TYPE_CHECKING`, plus `importlib.import_module("literal")`. An import of a
submodule is an edge to the submodule only: Python runs the package `__init__`s above it first,
but a package importing its own submodules is not a circle.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder of the checkout -> the import name it is installed under (setup.py's MAPPED)
FOLDERS = {"vidm": "vidm", "kernels": "vidm.kernels", "train": "vidm.train"}


def tree_modules() -> dict[str, tuple[Path, bool]]:
    """Import name -> (file, is a package) for every .py file under vidm/, kernels/, train/."""
    mods = {}
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            mods[".".join((name, *(parts[:-1] if is_pkg else parts)))] = (path, is_pkg)
    return mods


def _installed_name(name: str) -> str:
    """The checkout's top-level names `kernels.x` / `train.x` mean `vidm.kernels.x` / `vidm.train.x`."""
    head, _, rest = name.partition(".")
    if head in ("kernels", "train"):
        return FOLDERS[head] + ("." + rest if rest else "")
    return name


def imports_of(path: Path, module: str, is_pkg: bool) -> list[tuple[str, int]]:
    """(absolute module or name imported, line) for every import in the file; `from a import b`
    gives `a.b` (resolved to a module or to `a` by `edges`)."""
    package = module if is_pkg else module.rpartition(".")[0]
    found = []

    def absolute(name: str, level: int) -> str:
        if not level:
            return name
        base = package.split(".")
        base = base[:len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level)
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            found.append((absolute(name.lstrip("."), level), node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int], list[str]]:
    """(module -> modules of the tree it imports, (a, b) -> line of a's first import of b, and
    the imports of the checkout's top-level names `kernels` / `train`, which are not installed)."""
    mods = tree_modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph, lines, bare = {}, {}, []
    for module, (path, is_pkg) in mods.items():
        deps = set()
        for name, line in imports_of(path, module, is_pkg):
            if name.partition(".")[0] in ("kernels", "train"):
                bare.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
            target = resolve(_installed_name(name))
            if target and target != module:
                deps.add(target)
                lines.setdefault((module, target), line)
        graph[module] = deps
    return graph, lines, bare


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle [a, b, ..., a], or None (iterative depth-first search)."""
    state = {}  # module -> 1 on the current path, 2 done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [], [(start, iter(sorted(graph[start])))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph, _, _ = import_graph()
    assert "vidm.kernels.bench" in graph["vidm.commands.bench"]  # inside a function
    assert "vidm.kernels._common" in graph["vidm.kernels.attention"]  # `from ._common import`
    assert "vidm.train.loop" in graph["vidm.train.motion"]
    assert {"vidm.kernels.attention", "vidm.kernels.group_norm"} <= graph["vidm.kernels.compile_check"]
    assert "vidm.kernels" in graph["vidm.models.blocks"]


def test_no_import_circle():
    graph, lines, _ = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} (line {lines[a, b]})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import circle:\n  " + "\n  ".join(steps))


def test_no_module_imports_the_checkout_top_level_names():
    # `kernels` and `train` are not installed (only `vidm` is): the tree imports them as
    # vidm.kernels / vidm.train, or relatively inside kernels/ and train/.
    _, _, bare = import_graph()
    assert not bare, "\n".join(bare)


def test_pretrained_imports_no_package_namespace():
    # vidm.models.pretrained imports the model classes' own modules, never a package's
    # `__init__` (`from vidm.models import ...` there was half of an import circle).
    mods = tree_modules()
    path, _ = mods["vidm.models.pretrained"]
    for name, line in imports_of(path, "vidm.models.pretrained", False):
        if name.partition(".")[0] != "vidm":
            continue
        module = name if name in mods else name.rpartition(".")[0]  # `from a import b`: a.b or a
        assert module in mods and not mods[module][1], f"pretrained.py:{line}: imports package {module}"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "VIDM_KERNELS")}
    env["PYTHONPATH"] = ""  # nothing but the installed packages
    return env


def test_importing_the_kernels_sets_no_environment_variable(tmp_path):
    # In a clean process without TRITON_INTERPRET: importing the kernels (and the models, the CLI)
    # leaves os.environ as it was, and a user's CPU run then takes the torch paths: Triton (if
    # installed) imports but cannot launch, `auto` picks torch and forcing Triton is a clear
    # error, not a crash.
    code = textwrap.dedent("""
        import json, os
        before = dict(os.environ)
        import vidm.kernels, vidm.kernels.attention, vidm.kernels.group_norm, vidm.kernels.bench
        import vidm.kernels.compile_check
        import vidm.models, vidm.cli
        after = dict(os.environ)
        out = {"changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
               "interpret": vidm.kernels.INTERPRET}

        import torch
        from vidm import kernels
        from vidm.errors import ConfigError, ShapeError
        if not torch.cuda.is_available():
            q = torch.randn(1, 2, 8, 32); x = torch.randn(1, 32, 4, 4)
            out["providers"] = [kernels.attention_provider(q, q, q), kernels.group_norm_provider(x)]
            torch.testing.assert_close(kernels.attention(q, q, q),
                                       torch.nn.functional.scaled_dot_product_attention(q, q, q))
            kernels.group_norm(x, 8, None, None, act="silu")
            os.environ["VIDM_KERNELS"] = "triton"; kernels.reset_settings()
            try:
                kernels.group_norm(x, 8, None, None)
            except (ShapeError, ConfigError) as e:
                out["forced"] = str(e)
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["changed"] == []
    assert not out["interpret"]  # no interpreter unless asked for
    if "providers" in out:  # no GPU here
        assert out["providers"] == ["sdpa", "torch"]
        assert "TRITON_INTERPRET=1" in out["forced"] or "not importable" in out["forced"], out


# ---------------------------------------------------------------------------------------------
# Installation: only `vidm` at the top level

def test_package_config_installs_only_vidm_at_the_top_level():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "[tool.setuptools.packages" not in pyproject and "\npackages =" not in pyproject  # setup.py's
    setup = ast.parse((ROOT / "setup.py").read_text())
    mapped = next(ast.literal_eval(n.value) for n in ast.walk(setup)
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "MAPPED")
    assert mapped == {"vidm.kernels": "kernels", "vidm.train": "train"}
    for folder in mapped.values():  # mapped one folder each: a subpackage there would be left out
        assert not [p for p in (ROOT / folder).iterdir() if (p / "__init__.py").exists()], folder


def test_installed_names_come_from_the_checkout_and_bare_names_do_not(tmp_path):
    # Outside the checkout, `vidm.kernels` / `vidm.train` are these folders; `kernels` / `train`
    # are not vidm's (absent, or another distribution's).
    code = textwrap.dedent("""
        import importlib.util, json
        spec = lambda n: getattr(importlib.util.find_spec(n), "origin", None)
        print(json.dumps({n: spec(n) for n in ("vidm.kernels", "vidm.train", "kernels", "train")}))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    origin = json.loads(res.stdout)
    assert origin["vidm.kernels"] == str(ROOT / "kernels" / "__init__.py")
    assert origin["vidm.train"] == str(ROOT / "train" / "__init__.py")
    for bare in ("kernels", "train"):
        assert origin[bare] is None or not origin[bare].startswith(str(ROOT)), origin[bare]


FAKE_SETUP = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "not-vidm-kernels"
version = "1.0"

[tool.setuptools]
packages = ["kernels", "train"]
"""

CHECK = textwrap.dedent("""
    import json, subprocess, sys
    import kernels, train
    import torch
    import vidm.kernels, vidm.kernels.attention, vidm.train
    q = torch.randn(1, 2, 8, 32)
    torch.testing.assert_close(vidm.kernels.attention(q, q, q), torch.nn.functional.scaled_dot_product_attention(q, q, q))
    help_rc = subprocess.run([sys.executable, "-m", "vidm", "--help"], capture_output=True).returncode
    print(json.dumps({"kernels": kernels.WHO, "train": train.WHO, "vidm.kernels": vidm.kernels.__file__,
                      "vidm.train": vidm.train.__file__, "help": help_rc}))
""")


@pytest.mark.slow
def test_fresh_venv_with_another_kernels_and_train_distribution(tmp_path):
    """A fresh venv: another distribution with top-level `kernels` and `train`, and vidm, installed
    both regularly and editable (the latter from a copy of the checkout): each imports as itself.
    Needs pip to reach torch (the CPU wheel) and setuptools, as `.ci/run` does; about a minute."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={_torch_version()}", "setuptools>=64", "wheel"], check=True, timeout=900)

    fake = tmp_path / "fake"
    for pkg in ("kernels", "train"):
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text(f"WHO = 'other {pkg}'\n")
    (fake / "pyproject.toml").write_text(FAKE_SETUP)
    subprocess.run([*pip, "--no-build-isolation", str(fake)], check=True, timeout=300)

    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("vidm", "kernels", "train"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)

    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for editable in (False, True):
        subprocess.run([*pip, "--no-deps", "--no-build-isolation", *(["-e"] if editable else []), str(src)],
                       check=True, timeout=600)
        res = subprocess.run([py, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")})
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["kernels"] == "other kernels" and out["train"] == "other train", out
        where = src if editable else site / "vidm"
        assert out["vidm.kernels"] == str(where / "kernels" / "__init__.py"), out
        assert out["vidm.train"] == str(where / "train" / "__init__.py"), out
        assert out["help"] == 0
        # the other distribution's files are untouched: nothing of vidm went to the top level
        assert sorted(p.name for p in (site / "kernels").iterdir() if p.suffix == ".py") == ["__init__.py"]
        subprocess.run([py, "-m", "pip", "uninstall", "--quiet", "--yes", "vidm"], check=True, timeout=300)


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]
