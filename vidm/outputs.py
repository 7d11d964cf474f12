"""Where a command's outputs go: one policy, checked before any work, and an all-or-nothing commit.

The policy (also in README "Commands"):
- an existing file, or an existing non-empty folder, is refused unless `overwrite`;
- even with `overwrite` a folder is replaced only when vidm wrote it: every folder vidm makes
  holds `MARKER`, listing the files vidm put there, and a folder holding any other file is never
  replaced (a file output never replaces a folder, nor a folder output a file);
- an output that is one of the inputs (same path, link or inode), or a folder output that
  holds an input, another output or the current folder, is refused;
- the parent folder must exist (or, where the command creates parents, the nearest existing
  ancestor) and be a writable folder.

Use: `plan = OutputPlan(inputs, overwrite)`, `plan.file(p)` / `plan.folder(p)` for every output,
`plan.check()` before any compute, then `with plan.write() as temp: ... write to temp[p] ...`:
every output goes to a temp name beside its target and all are renamed into place when the
block ends without error; on an error every temp is removed and no target is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vidm.errors import OutputError

MARKER = ".vidm-output"
# Files vidm writes into folders for its own bookkeeping (MARKER in every output folder and its
# subfolders, vidm.data.index.INDEX_NAME in scanned data folders): not "other files" when
# deciding whether a folder is vidm's own.
BOOKKEEPING = frozenset({MARKER, ".vidm_index.json"})


# ---------------------------------------------------------------------- vidm's own folders


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_modes(root: Path) -> None:
    """Give `root` (a file, or a folder and everything under it, all written by vidm) the modes
    a plain `open` / `mkdir` gives under the current umask: temp-file helpers (mkdtemp, mkstemp,
    safetensors) make 0700 folders and 0600 files that nobody else can read."""
    root = Path(root)
    mask = _umask()
    if not root.is_dir():
        os.chmod(root, 0o666 & ~mask)
        return
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


def _unreadable(e: OSError):
    # A subfolder vidm cannot list may hold anything: never treat it as empty.
    raise OutputError(f"{e.filename}: cannot read it ({e.strerror}); not replaced")


def _files(folder: Path) -> set[str]:
    """Every file (and link) under `folder`, relative, bookkeeping files left out."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable):
        rel = Path(dirpath).relative_to(folder)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found.update((rel / n).as_posix() for n in filenames + links if n not in BOOKKEEPING)
    return found


def mark(folder: Path) -> None:
    """Record `folder` as vidm's output: MARKER lists the files in it now."""
    record = {"written_by": "vidm", "files": sorted(_files(folder))}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def _marked_files(folder: Path) -> set[str] | None:
    try:
        record = json.loads((folder / MARKER).read_text())
        return set(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def foreign_file(folder: Path, also_ok: set[str] | None = None) -> str | None:
    """A file in `folder` that vidm did not write there (None when there is none): one not in
    its MARKER, nor in `also_ok` (what the replacing write holds)."""
    ok = (_marked_files(folder) or set()) | (also_ok or set())
    return next((f for f in sorted(_files(folder)) if f not in ok), None)


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _sibling(path: Path, tag: str, folder: bool) -> Path:
    # Beside the target (so the final rename stays on one filesystem), hidden, unique. A file
    # keeps its suffix (the muxer and Pillow pick the format from it); a folder gets none (a
    # suffix-less path is what write_video reads as "png frames").
    token = uuid.uuid4().hex[:8]
    name = f".{path.name}-vidm-{tag}-{token}" if folder else f".{path.stem}-vidm-{tag}-{token}{path.suffix}"
    return path.with_name(name)


def _remove(path: Path) -> None:
    """Delete a temp or a set-aside old copy (both vidm's own); best effort, since it runs
    while another error is raised or after every output is already in place."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def commit(pairs: list[tuple[Path, Path]], may_replace) -> None:
    """Rename every (temp, target) pair into place, all or none. An existing target is moved
    aside first and deleted only once every new one is in; `may_replace(target, temp)` returns
    None or why the target must stay (raised as OutputError once whatever was moved is back)."""
    aside: list[tuple[Path, Path]] = []
    placed: list[tuple[Path, Path]] = []
    try:
        for temp, target in pairs:
            if os.path.lexists(target):
                why = may_replace(target, temp)
                if why:
                    raise OutputError(f"{target}: {why}")
                old = _sibling(target, "old", target.is_dir())
                os.rename(target, old)
                aside.append((target, old))
            os.rename(temp, target)
            placed.append((temp, target))
    except BaseException:
        for temp, target in reversed(placed):
            os.rename(target, temp)
        for target, old in reversed(aside):
            os.rename(old, target)
        raise
    for _, old in aside:
        _remove(old)


def replace_folder(temp: Path, target: Path, legacy: bool = False) -> None:
    """Mark the finished folder `temp` and swap it in for `target`, which may be missing, empty,
    or vidm's own earlier output (the library's writers of png-frame, model, pipeline and cache
    folders). `legacy`: also replace an unmarked folder (written before markers existed) when
    every file in it is one the new folder holds, so nothing is lost by name; for model and
    cache folders, whose file names are vidm's own, never for png frames a user may have made."""
    def may_replace(target: Path, temp: Path) -> str | None:
        if not target.is_dir() or target.is_symlink():
            return "exists and is not a folder"
        other = foreign_file(target, also_ok=_files(temp) if legacy else None)
        return f"holds {other}, which vidm did not write; not replaced" if other else None

    mark(temp)
    commit([(temp, target)], may_replace)


# ---------------------------------------------------------------------- the plan


def add_overwrite_arg(parser) -> None:
    """--overwrite, for every command that writes outputs (an argparse parser or group)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that already exist; a folder is replaced only when it is vidm's "
                             "own earlier output, never one holding other files (default: existing outputs "
                             "are refused before any work)")


@dataclass
class _Output:
    path: Path
    folder: bool
    make_parents: bool


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links: two names, one inode
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return inner.resolve().is_relative_to(outer.resolve())


class OutputPlan:
    """Every output of one command, checked together before any work and written together."""

    def __init__(self, inputs: Iterable = (), overwrite: bool = False):
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.overwrite = overwrite
        self.outputs: list[_Output] = []

    def file(self, path, make_parents: bool = False) -> Path:
        return self._add(path, False, make_parents)

    def folder(self, path, make_parents: bool = False) -> Path:
        return self._add(path, True, make_parents)

    def _add(self, path, folder: bool, make_parents: bool) -> Path:
        path = Path(path)  # as given (messages name it so); links are kept: the name is what gets replaced
        self.outputs.append(_Output(path, folder, make_parents))
        return path

    # ------------------------------------------------------------------ checking

    def check(self) -> None:
        """Raise OutputError (one line, naming the path) for the first output that breaks the policy."""
        for i, out in enumerate(self.outputs):
            self._check_place(out)
            for inp in self.inputs:  # before the existence checks: --overwrite changes nothing here
                if os.path.lexists(inp) and _same(out.path, inp):
                    alias = "" if os.path.abspath(inp) == os.path.abspath(out.path) else f" ({inp}, the same file)"
                    raise OutputError(f"{out.path}: is an input{alias}; choose another output path")
                if out.folder and os.path.lexists(inp) and _inside(inp, out.path):
                    raise OutputError(f"{out.path}: holds the input {inp}; choose another output folder")
            self._check_existing(out)
            for other in self.outputs[:i]:
                if _same(out.path, other.path) or out.path == other.path:
                    raise OutputError(f"{out.path}: given as two outputs")
                for a, b in ((out, other), (other, out)):
                    if a.folder and _inside(b.path, a.path):
                        raise OutputError(f"{b.path}: is inside the output folder {a.path}, which is "
                                          f"written as a whole; put it elsewhere")

    def _check_place(self, out: _Output) -> None:
        path, parent = out.path, out.path.parent
        if out.folder and Path.cwd().resolve().is_relative_to(path.resolve()):
            raise OutputError(f"{path}: is the current folder (or holds it); give a new folder name")
        if path.resolve() == path.resolve().parent:
            raise OutputError(f"{path}: cannot be an output")
        probe = parent
        while out.make_parents and not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        if not os.path.lexists(probe):
            raise OutputError(f"{path}: output folder {parent} does not exist")
        if not probe.is_dir():
            raise OutputError(f"{path}: {probe} is not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: cannot write in {probe} (permission denied)")

    def _check_existing(self, out: _Output) -> None:
        path = out.path
        if not os.path.lexists(path):
            return
        is_dir = path.is_dir() and not path.is_symlink()
        if not out.folder:
            if is_dir:
                raise OutputError(f"{path}: is a folder; give a file path")
            if not self.overwrite:
                raise OutputError(f"{path}: already exists (add --overwrite to replace it)")
            return
        if not is_dir:
            raise OutputError(f"{path}: exists and is not a folder")
        if _is_empty(path):
            return
        other = foreign_file(path)
        if other is not None:  # refused whatever the flag: say so rather than suggest --overwrite
            raise OutputError(f"{path}: holds {other}, which vidm did not write; vidm replaces only "
                              f"its own output folders (remove it or choose another folder)")
        if not self.overwrite:
            raise OutputError(f"{path}: holds an earlier vidm output (add --overwrite to replace it)")

    def _may_replace(self, target: Path, temp: Path) -> str | None:
        out = next(o for o in self.outputs if o.path == target)
        try:
            self._check_existing(out)
        except OutputError as e:
            return str(e).removeprefix(f"{target}: ")
        return None

    # ------------------------------------------------------------------ writing

    @contextmanager
    def write(self) -> Iterator[dict[Path, Path]]:
        """Yield {target: temp path}; write each output to its temp path. On a clean exit every
        temp is renamed into place (folders marked as vidm's first); on an error none is."""
        self.check()  # again: a target may have appeared while the command computed
        made = self._make_parents()
        temps = {o.path: _sibling(o.path, "tmp", o.folder) for o in self.outputs}
        try:
            yield temps
            for o in self.outputs:
                temp = temps[o.path]
                if o.folder and not temp.is_dir():
                    temp.mkdir()  # nothing to put there: still an (empty) folder, as asked
                if o.folder:
                    mark(temp)
                elif not os.path.lexists(temp):
                    raise OutputError(f"{o.path}: was not written")
            commit([(temps[o.path], o.path) for o in self.outputs], self._may_replace)
        except BaseException:
            for temp in temps.values():
                if os.path.lexists(temp):
                    _remove(temp)
            for folder in reversed(made):
                if folder.is_dir() and _is_empty(folder):
                    folder.rmdir()
            raise

    def _make_parents(self) -> list[Path]:
        made = []
        for o in self.outputs:
            missing = []
            p = o.path.parent
            while not os.path.lexists(p):
                missing.append(p)
                p = p.parent
            for folder in reversed(missing):
                folder.mkdir()
                made.append(folder)
        return made
