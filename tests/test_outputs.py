"""Output files: the same frames give the same bytes in any process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


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
