"""`vidm data synth` and `vidm data info` end to end, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vidm.cli import main
from video_helpers import blank_packets, truncate


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "synth", "--out", str(out), "--videos", "3", "--frames", "12",
                 "--size", "32", "--seed", "0", "--quiet"]) == 0
    assert len(list(out.glob("*.mp4"))) == 3 and len(list(out.glob("*.json"))) == 3
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 videos, 36 frames" in text and "min 12, max 12" in text and "32x32" in text
    assert "fps: 8" in text
    # A file cut in half is used as far as it decodes (the header still says 12 frames); a
    # file of which no frame decodes is unreadable.
    truncate(out / "00001.mp4", out / "cut.mp4", 0.5)
    blank_packets(out / "00001.mp4", out / "broken.mp4")
    assert main(["data", "info", "--json", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 4 and summary["frames_max"] == 12
    cut = [v for v in summary["per_video"] if v["path"] == str(out / "cut.mp4")]
    assert len(cut) == 1 and 0 < cut[0]["frames"] < 12 and cut[0]["container_frames"] == 12
    assert [u["path"] for u in summary["unreadable"]] == [str(out / "broken.mp4")]
    assert summary["unreadable"][0]["reason"] == "no frame decodes"


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d / "missing", "missing: no such file or directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no video files found"),
    (lambda d: (d / "x.mp4").write_text("no") and d / "x.mp4", "x.mp4: not a readable video"),
])
def test_info_bad_input_is_one_line_and_exit_1(tmp_path, capsys, make, pattern):
    path = make(tmp_path)
    assert main(["data", "info", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vidm: error: ") and pattern in err[-1]


def test_cli_process_exit_codes(tmp_path):
    """Through a real process: the error is one line on stderr, no traceback, exit 1."""
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.mp4").write_text("not a video")
    r = subprocess.run([sys.executable, "-m", "vidm", "data", "info", str(junk)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"vidm: error: {junk}: no usable videos (1 unreadable)"
    assert f"{junk}/a.mp4: not a readable video" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vidm", "data", "synth", "--out", str(tmp_path / "o"),
                        "--size", "31"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == (
        "vidm: error: --size must be even and >= 16 (H.264 yuv420p), got 31")
