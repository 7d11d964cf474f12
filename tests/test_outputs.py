"""Output paths (vidm.outputs): vidm never deletes what it did not write, refuses an output that
is an input, checks every output before any compute, writes all of a command's outputs or none,
and writes the same bytes for the same frames in any process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_pipeline import SIZE, _frames, _png, _tiny_pipeline
from vidm.cli import main
from vidm.errors import VidmError


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return _tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    return str(pipe.save_pretrained(tmp_path_factory.mktemp("model") / "pipe"))


@pytest.fixture(scope="module")
def stages(pipe, tmp_path_factory):
    """The three stage folders `vidm pack` reads."""
    root = tmp_path_factory.mktemp("stages")
    return {s: str(getattr(pipe, s).save_pretrained(root / s)) for s in ("autoencoder", "content", "motion")}


@pytest.fixture
def sandbox(tmp_path):
    """Two input images, a short video (mp4 and gif) and files vidm has nothing to do with."""
    from vidm.video import write_video

    s = tmp_path / "sandbox"
    s.mkdir()
    a, b = _frames(2)
    _png(s / "a.png", a)
    _png(s / "b.png", b)
    write_video(s / "clip.mp4", _frames(6), fps=8)
    write_video(s / "clip.gif", _frames(6), fps=8)
    (s / "notes.txt").write_text("mine\n")
    for d in ("sub", "sub_1", "sub_s1"):  # sub_1 / sub_s1: what --num 2 / --samples 2 of -o sub write
        (s / d).mkdir()
        (s / d / "keep.txt").write_text("mine too\n")
    return s


def _snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


def _one_line_error(rc: int, capsys, match: str | None = None) -> str:
    err = capsys.readouterr().err
    assert rc == 1, f"exit status {rc}: {err}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("vidm: error: ") and "Traceback" not in err, err
    if match is not None:
        assert match in last, last
    return last


def _pack_inputs(stages) -> list[str]:
    return [x for stage, path in stages.items() for x in (f"--{stage}", path)]


def _sampling(model_dir) -> list[str]:
    return ["--model", model_dir, "--steps", "1", "--quiet"]


MODES = ["png_folder_holding_the_inputs", "png_folder_of_other_files", "mp4_is_the_input", "gif_is_the_input",
         "strip_is_an_input", "samples", "generate_num", "predict", "pack", "cache_latents", "synth", "eval"]


def _cases(s, model_dir, stages, elsewhere) -> dict[str, list[str]]:
    """Every output mode, aimed at the sandbox the way the issue's runs were."""
    images = [str(s / "a.png"), str(s / "b.png")]
    sample = _sampling(model_dir)
    video = ["--video", str(s / "clip.mp4"), "--factor", "2", "--max-frames", "3"]
    cases = {
        "png_folder_holding_the_inputs": ["interpolate", *images, "--frames", "1", "-o", str(s), *sample],
        "png_folder_of_other_files": ["interpolate", *images, "--frames", "1", "-o", str(s / "sub"), *sample],
        "mp4_is_the_input": ["interpolate", *video, "-o", str(s / "clip.mp4"), *sample],
        "gif_is_the_input": ["interpolate", "--video", str(s / "clip.gif"), "--factor", "2", "-o", str(s / "clip.gif"),
                             *sample],
        "strip_is_an_input": ["interpolate", *images, "--frames", "1", "-o", str(elsewhere / "o.mp4"),
                              "--strip", str(s / "a.png"), *sample],
        "samples": ["interpolate", *images, "--frames", "1", "--samples", "2", "-o", str(s / "sub"), *sample],
        "generate_num": ["generate", "--frames", "3", "--num", "2", "-o", str(s / "sub"), *sample],
        "predict": ["predict", "--video", str(s / "clip.mp4"), "--frames", "2", "-o", str(s / "clip.mp4"), *sample],
        "pack": ["pack", *_pack_inputs(stages), "--size", str(SIZE),
                 "--window", "5", "--max-span", "8", "--sigma-data", "0.5", "-o", str(s / "sub")],
        "cache_latents": ["data", "cache-latents", "--autoencoder", stages["autoencoder"], "--data", str(s),
                          "--out", str(s / "sub"), "--size", str(SIZE), "--device", "cpu"],
        "synth": ["data", "synth", "--out", str(s / "sub"), "--videos", "1", "--frames", "4", "--size", "16",
                  "--quiet"],
        "eval": ["eval", "interpolate", "--data", str(s), "--methods", "crossfade", "--gaps", "2", "--clips", "1",
                 "--no-plot", "--out", str(s / "sub"), "--quiet"],
    }
    assert list(cases) == MODES
    return cases


# ---------------------------------------------------------------------- nothing of the user's is lost


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("mode", MODES)
def test_inputs_and_unrelated_files_survive_every_output_mode(mode, overwrite, sandbox, model_dir, stages,
                                                              tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = _snapshot(sandbox)
    args = _cases(sandbox, model_dir, stages, elsewhere)[mode] + (["--overwrite"] if overwrite else [])
    rc = main(args)
    assert _snapshot(sandbox) == before  # nothing deleted, changed, or added (no temp files either)
    assert list(elsewhere.iterdir()) == []
    _one_line_error(rc, capsys)


def test_output_dot_is_a_one_line_error(sandbox, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(sandbox)
    before = _snapshot(sandbox)
    for extra in ([], ["--overwrite"]):
        rc = main(["interpolate", "a.png", "b.png", "--frames", "1", "-o", ".", *_sampling(model_dir), *extra])
        _one_line_error(rc, capsys, "current folder")
    assert _snapshot(sandbox) == before


@pytest.mark.parametrize("link", ["same_path", "hard_link", "symlink"])
def test_an_output_that_is_an_input_is_refused(link, sandbox, model_dir, capsys):
    clip = sandbox / "clip.mp4"
    out = {"same_path": clip, "hard_link": sandbox / "hard.mp4", "symlink": sandbox / "soft.mp4"}[link]
    if link == "hard_link":
        os.link(clip, out)
    if link == "symlink":
        out.symlink_to(clip.name)
    before = _snapshot(sandbox)
    for extra in ([], ["--overwrite"]):
        rc = main(["interpolate", "--video", str(clip), "--factor", "2", "--max-frames", "3", "-o", str(out),
                   *_sampling(model_dir), *extra])
        assert _snapshot(sandbox) == before
        _one_line_error(rc, capsys, "is an input")
    assert out.is_symlink() == (link == "symlink")


def test_pack_into_one_of_its_input_folders_is_refused(stages, capsys):
    motion = Path(stages["motion"])
    before = _snapshot(motion)
    rc = main(["pack", *_pack_inputs(stages), "--size", str(SIZE), "--window", "5", "--max-span", "8",
               "--sigma-data", "0.5", "-o", str(motion), "--overwrite"])
    _one_line_error(rc, capsys, "is an input")
    assert _snapshot(motion) == before


# ---------------------------------------------------------------------- checked first, all or nothing


def test_outputs_that_cannot_be_written_are_one_line_errors_and_write_nothing(sandbox, model_dir, stages,
                                                                               tmp_path, capsys):
    # Kinds of "cannot write here" that hold even for root (chmod does not stop root): a parent
    # that is a regular file, and a folder where a file goes (or the other way round).
    (sandbox / "strip.png").mkdir()
    (sandbox / "sub.mp4").mkdir()
    out = tmp_path / "ok.mp4"
    images = [str(sandbox / "a.png"), str(sandbox / "b.png"), "--frames", "1"]
    note = sandbox / "notes.txt"
    cases = {
        "strip is a folder": (["interpolate", *images, "-o", str(out), "--strip", str(sandbox / "strip.png")],
                              "is a folder"),
        "strip in a file": (["interpolate", *images, "-o", str(out), "--strip", str(note / "s.png")], "not a folder"),
        "mp4 is a folder": (["interpolate", *images, "-o", str(sandbox / "sub.mp4")], "is a folder"),
        "png frames in a file": (["interpolate", *images, "-o", str(note / "frames")], "not a folder"),
        "png frames over a file": (["interpolate", *images, "-o", str(note.with_suffix(""))], "not a folder"),
    }
    (sandbox / "notes").write_text("a file where a frame folder would go\n")
    before = _snapshot(sandbox)
    for name, (args, match) in cases.items():
        for extra in ([], ["--overwrite"]):
            _one_line_error(main([*args, *_sampling(model_dir), *extra]), capsys, match)
            assert not out.exists(), name
            assert _snapshot(sandbox) == before, name
    for args in (["data", "synth", "--out", str(note / "d"), "--videos", "1", "--frames", "2", "--size", "16"],
                 ["pack", *_pack_inputs(stages), "-o", str(note / "p")],
                 ["data", "cache-latents", "--autoencoder", stages["autoencoder"], "--data", str(sandbox),
                  "--out", str(note / "c")]):
        _one_line_error(main(args), capsys, "not a folder")
        assert _snapshot(sandbox) == before, args[:2]


def test_strip_into_a_read_only_folder_writes_nothing(sandbox, model_dir, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: let the permission check see what a user's would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(locked) and real_access(p, mode))
    try:
        rc = main(["interpolate", str(sandbox / "a.png"), str(sandbox / "b.png"), "--frames", "1",
                   "-o", str(tmp_path / "ok.mp4"), "--strip", str(locked / "s.png"), *_sampling(model_dir)])
        assert not (tmp_path / "ok.mp4").exists() and list(locked.iterdir()) == []
        _one_line_error(rc, capsys, "permission denied")
    finally:
        locked.chmod(0o700)


def _no_compute(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("vidm.commands.sample.load_pipeline", refuse)


@pytest.mark.parametrize("command", ["samples", "num"])
def test_one_existing_numbered_output_refuses_before_compute_and_writes_nothing(command, sandbox, model_dir,
                                                                                tmp_path, monkeypatch, capsys):
    from vidm.video import write_video

    images = [str(sandbox / "a.png"), str(sandbox / "b.png"), "--frames", "1"]
    args, existing = {"samples": (["interpolate", *images, "--samples", "2"], "po_s1"),
                      "num": (["generate", "--frames", "3", "--num", "2"], "po_1")}[command]
    write_video(tmp_path / existing, _frames(3))  # an earlier vidm output: replaceable, but only if asked
    before = _snapshot(tmp_path)
    _no_compute(monkeypatch)
    _one_line_error(main([*args, "-o", str(tmp_path / "po"), *_sampling(model_dir)]), capsys, "--overwrite")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("fails", ["second_video", "strip"])
def test_a_failure_while_writing_leaves_no_output_at_all(fails, sandbox, model_dir, tmp_path, monkeypatch):
    import vidm.strip
    import vidm.video

    write, calls = vidm.video.write_video, []

    def flaky_write(path, frames, **kw):
        calls.append(path)
        if fails == "second_video" and len(calls) == 2:
            raise OSError("disk full")
        return write(path, frames, **kw)

    def broken_strip(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(vidm.video, "write_video", flaky_write)
    if fails == "strip":
        monkeypatch.setattr(vidm.strip, "save_strip", broken_strip)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="disk full"):
        main(["interpolate", str(sandbox / "a.png"), str(sandbox / "b.png"), "--frames", "1", "--samples", "2",
              "-o", str(out / "po"), "--strip", str(out / "s.png"), *_sampling(model_dir)])
    assert list(out.iterdir()) == []  # neither po_s0 nor a temp file


# ---------------------------------------------------------------------- --overwrite replaces vidm's own output


def _frame_count(path) -> int:
    from vidm.video import read_video_info

    return read_video_info(path).num_frames


@pytest.mark.parametrize("kind", ["png", "mp4"])
def test_overwrite_replaces_vidms_own_output_only(kind, sandbox, model_dir, tmp_path, capsys):
    out = tmp_path / ("frames" if kind == "png" else "o.mp4")
    images = [str(sandbox / "a.png"), str(sandbox / "b.png")]

    def run(frames: int, *extra) -> int:
        return main(["interpolate", *images, "--frames", str(frames), "-o", str(out), *_sampling(model_dir), *extra])

    assert run(1) == 0 and _frame_count(out) == 3
    _one_line_error(run(2), capsys, "--overwrite")
    assert _frame_count(out) == 3
    assert run(2, "--overwrite") == 0 and _frame_count(out) == 4
    if kind == "png":
        (out / "notes.txt").write_text("added by hand\n")
        _one_line_error(run(1, "--overwrite"), capsys, "notes.txt")
        assert (out / "notes.txt").read_text() == "added by hand\n" and _frame_count(out) == 4


def test_synth_refuses_a_non_empty_folder_and_overwrites_its_own(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["data", "synth", "--out", str(out), "--frames", "4", "--size", "16", "--quiet"]
    assert main([*args, "--videos", "1"]) == 0
    assert main(["data", "info", str(out)]) == 0  # writes its index cache (vidm's bookkeeping) into d
    _one_line_error(main([*args, "--videos", "2"]), capsys, "--overwrite")
    assert main([*args, "--videos", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["00000.mp4", "00001.mp4"]
    (out / "notes.txt").write_text("x")
    _one_line_error(main([*args, "--videos", "1", "--overwrite"]), capsys, "notes.txt")
    assert (out / "00001.mp4").is_file() and (out / "notes.txt").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, "--videos", "1", "--out", str(empty)]) == 0  # an empty folder needs no --overwrite


def test_index_cache_is_bookkeeping():
    from vidm.data.index import INDEX_NAME
    from vidm.outputs import BOOKKEEPING, MARKER

    assert {MARKER, INDEX_NAME} <= BOOKKEEPING


def test_library_folder_writers_never_replace_a_folder_of_other_files(pipe, tmp_path):
    from vidm.video import write_video

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine\n")
    with pytest.raises(VidmError, match="notes.txt"):
        write_video(user, _frames(2))
    with pytest.raises(VidmError, match="notes.txt"):
        pipe.autoencoder.save_pretrained(user)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    # A model folder from before markers (runs/NAME/model of a run being resumed) holds only
    # the files a new save writes: still replaced.
    model = pipe.autoencoder.save_pretrained(tmp_path / "model")
    (model / ".vidm-output").unlink()
    pipe.autoencoder.save_pretrained(model)
    assert (model / ".vidm-output").is_file()


# ---------------------------------------------------------------------- same frames, same bytes


def test_same_frames_give_the_same_bytes_in_separate_processes(tmp_path):
    # Each process writes the frames twice: x264's macroblock tree used to read memory left by
    # the first write, and Matroska/WebM headers held random ids.
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from vidm.data.synth import render_video
        from vidm.video import write_video

        frames, _ = render_video(5, 1, 8, 32)
        out = Path(sys.argv[1])
        out.mkdir()
        for k in range(2):
            for ext in ("mp4", "mov", "mkv", "webm", "gif", ""):
                write_video(out / f"{k}{'.' + ext if ext else '-png'}", frames, fps=8)
    """)
    for i in range(3):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / str(i))], check=True, timeout=300)
    runs = [_snapshot(tmp_path / str(i)) for i in range(3)]
    assert runs[0] == runs[1] == runs[2]
    first = {name[1:]: data for name, data in runs[0].items() if name.startswith("0")}
    second = {name[1:]: data for name, data in runs[0].items() if name.startswith("1")}
    assert first == second and len(first) >= 6
