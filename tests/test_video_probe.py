"""What is a video is decided by probing, and frames are counted by decoding: every container
FFmpeg decodes is found by folder scans (whatever its name), text files are not videos, and a
file whose header promises more frames than decode is used with the frames that decode."""

from __future__ import annotations

import json
import os
import shutil

import av
import numpy as np
import pytest
from video_helpers import blank_packets, decode_index, index_frames, write_pyav

import vidm.data.index as index_mod
from vidm.cli import main
from vidm.data import INDEX_NAME, VideoFolder, build_index
from vidm.errors import NotEnoughFramesError
from vidm.video import is_video_file, read_clip, read_video_info

N = 20  # frames in every test video

# name -> (codec, muxer or None to go by the name). The muxers `write_video` does not write.
FORMATS = {
    "a.mpg": ("mpeg2video", None),  # MPEG-2 program stream
    "b.ts": ("mpeg2video", None),  # MPEG transport stream
    "c.flv": ("flv1", None),
    "d.wmv": ("wmv2", None),
    "e.3gp": ("mpeg4", None),
    "f.m4v": ("mpeg4", None),
    "g.vob": ("mpeg2video", None),
    "recording.dat": ("mpeg2video", "mpeg"),  # VCD-style .dat: a name that says nothing
}


@pytest.fixture(scope="module")
def probe_source(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    frames = index_frames(N)
    for name, (codec, fmt) in FORMATS.items():
        write_pyav(d / name, frames, codec, format=fmt)
    (d / "README.md").write_text("# Footage\n\nNot a video.\n")
    (d / "notes.txt").write_text("some notes\n")
    (d / "fetch.sh").write_text("#!/bin/bash\necho fetch\n")
    (d / "LICENSE").write_text("CC0\n")
    (d / "meta.json").write_text('{"fps": 8}\n')
    return d


@pytest.fixture
def probe_root(probe_source, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(probe_source, dst)
    return dst


def _names(items) -> list[str]:
    return sorted(os.path.basename(i.path) for i in items)


def test_every_container_ffmpeg_decodes_is_found_by_scans_and_read(probe_root):
    index = build_index(probe_root)
    assert _names(index.videos) == sorted(FORMATS)
    assert index.skipped == []  # README.md, notes.txt, fetch.sh, LICENSE, meta.json: not videos
    assert all(v.num_frames == N and (v.height, v.width) == (48, 64) for v in index.videos)
    ds = VideoFolder(probe_root, num_frames=5, stride=(1, 3), size=None, seed=0)
    assert len(ds) == len(FORMATS) and ds.skipped == []
    for i in range(len(ds)):
        p = ds.clip_params(i)
        item = ds[i]
        frames = ((item["video"].numpy() + 1) * 127.5).round().astype(np.uint8)
        frames = np.ascontiguousarray(frames.transpose(0, 2, 3, 1))  # (T, H, W, 3)
        assert decode_index(frames) == list(range(p.start, p.start + 5 * p.stride, p.stride))
    for name in FORMATS:
        assert is_video_file(probe_root / name)
        assert decode_index(read_clip(probe_root / name, 10, 5, 2)) == [10, 12, 14, 16, 18]
    assert not any(is_video_file(probe_root / n) for n in ("README.md", "LICENSE", "nothere.mp4"))


def test_data_info_on_one_mpeg_file(probe_root, capsys):
    """`vidm data info x.ts` used to call a file that reads fine corrupt ("decoded 0 of the
    last 4 frames": the check decoded from a keyframe guessed by seeking)."""
    for name in ("b.ts", "a.mpg"):
        capsys.readouterr()
        assert main(["data", "info", str(probe_root / name)]) == 0
        out = capsys.readouterr().out
        assert f"1 video, {N} frames" in out and f"{probe_root / name}: 64x48, 8 fps, {N} frames\n" in out


def test_text_files_are_ignored_unless_their_name_says_video(probe_root, monkeypatch):
    (probe_root / "notes.mp4").write_text("not a video")  # named as a video: unreadable
    (probe_root / "broken.ts").write_text("not a transport stream either")
    blank_packets(probe_root / "f.m4v", probe_root / "blank.mp4")  # opens, nothing decodes
    with av.open(str(probe_root / "tone.wav"), "w") as c:  # audio only: not a video
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    index = build_index(probe_root)
    assert _names(index.videos) == sorted(FORMATS)
    reasons = {os.path.basename(s.path): s.reason for s in index.skipped}
    assert sorted(reasons) == ["blank.mp4", "broken.ts", "notes.mp4"]
    assert reasons["notes.mp4"].startswith("not a readable video")
    assert reasons["blank.mp4"] == "no frame decodes"
    assert all("\n" not in r for r in reasons.values())
    # The verdicts are cached: a second scan probes nothing, non-videos included.
    probed = []
    real = index_mod.read_video_info
    monkeypatch.setattr(index_mod, "read_video_info",
                        lambda p, verify=False: probed.append(p.name) or real(p, verify))
    again = build_index(probe_root)
    assert probed == [] and again.videos == index.videos and again.skipped == index.skipped
    cached = json.loads((probe_root / INDEX_NAME).read_text())["entries"]
    assert cached["tone.wav"] == {"sig": cached["tone.wav"]["sig"], "not_video": True}
    assert "README.md" not in cached  # never handed to FFmpeg at all


@pytest.fixture(scope="module")
def short_headers(tmp_path_factory):
    """Files whose container promises more frames than decode (as in real footage):
    sparse.avi: 20 frames spread over 58 time slots (the AVI header counts slots);
    lastcut.mp4: 20 frames listed, the last one's bytes blanked (19 decode)."""
    d = tmp_path_factory.mktemp("short")
    frames = index_frames(N)
    write_pyav(d / "sparse.avi", frames, "mpeg4", pts_step=3)
    write_pyav(d / "whole.mp4", frames, "mpeg4")
    blank_packets(d / "whole.mp4", d / "lastcut.mp4", last_only=True)
    (d / "whole.mp4").unlink()
    return d


def test_header_count_above_decoded_is_usable_with_the_decoded_count(short_headers, tmp_path,
                                                                     capsys):
    root = tmp_path / "root"
    shutil.copytree(short_headers, root)
    sparse = read_video_info(root / "sparse.avi", verify=True)
    assert (sparse.num_frames, sparse.header_frames) == (20, 58)
    cut = read_video_info(root / "lastcut.mp4", verify=True)
    assert (cut.num_frames, cut.header_frames) == (19, 20)
    index = build_index(root)
    assert index.skipped == []
    assert {os.path.basename(v.path): (v.num_frames, v.header_frames) for v in index.videos} == {
        "lastcut.mp4": (19, 20), "sparse.avi": (20, 58)}
    ds = VideoFolder(root, num_frames=19, size=16)
    assert len(ds) == 2 and ds.skipped == [] and sorted(ds.frame_counts) == [19, 20]

    capsys.readouterr()
    assert main(["data", "info", str(root)]) == 0
    text = capsys.readouterr().out
    assert "2 videos, 39 frames" in text
    assert f"{root / 'lastcut.mp4'}: 64x48, 8 fps, 19 frames; container says 20" in text
    assert f"{root / 'sparse.avi'}: 64x48, 8 fps, 20 frames; container says 58" in text
    assert "unreadable" not in text
    assert main(["data", "info", str(root / "lastcut.mp4")]) == 0  # one file: the same line
    assert "19 frames; container says 20" in capsys.readouterr().out
    assert main(["data", "info", "--json", str(root)]) == 0
    per = {os.path.basename(v["path"]): (v["frames"], v["container_frames"])
           for v in json.loads(capsys.readouterr().out)["per_video"]}
    assert per == {"lastcut.mp4": (19, 20), "sparse.avi": (20, 58)}


@pytest.mark.parametrize("name, n", [("lastcut.mp4", 19), ("sparse.avi", 20)])
def test_read_clip_reads_the_last_decodable_frame(short_headers, name, n):
    path = short_headers / name
    assert decode_index(read_clip(path)) == list(range(n))  # every frame that decodes
    assert decode_index(read_clip(path, n - 1, 1)) == [n - 1]
    assert decode_index(read_clip(path, n - 4, 2, 3)) == [n - 4, n - 1]
    assert decode_index(read_clip(path, 5, stride=7)) == list(range(5, n, 7))
    with pytest.raises(NotEnoughFramesError, match=f"needs frame {n} .* has {n} frames"):
        read_clip(path, n - 2, 3)
    with pytest.raises(NotEnoughFramesError, match="past the end"):
        read_clip(path, n)


def test_frames_come_in_display_order_when_timestamps_are_decode_times(tmp_path):
    """Some muxers (e.g. opencvdoc_box.mp4's) store decode times as the timestamps of a stream
    with B-frames: the decoder hands frames out in the right order but their timestamps
    shuffled. Seeking must still give frames start, start + 1, ..."""
    path = tmp_path / "dts.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size, s.codec_context.thread_count = 8, 1
        s.options = {"bf": "3", "crf": "18"}
        first = []

        def mux(packets):
            for p in packets:
                first.append(p.dts) if not first else None
                p.dts -= first[0]
                p.pts = p.dts  # timestamps := decode times
                c.mux(p)

        for f in index_frames(N):
            mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        mux(s.encode())
    with av.open(str(path)) as c:
        stamps = [f.pts for f in c.decode(c.streams.video[0])]
    assert stamps != sorted(stamps)  # the file really is like that
    assert read_video_info(path, verify=True).num_frames == N
    for start in range(N - 2):
        assert decode_index(read_clip(path, start, 3)) == [start, start + 1, start + 2]
