"""vidm.video: reading clips (seeking), image folders and images, atomic writing, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from video_helpers import (blank_packets, decode_index, index_frames, psnr, smooth_frames, truncate,
                           write_avi)

import vidm.video as video
from vidm.errors import NotEnoughFramesError, ShapeError, VideoError
from vidm.video import read_clip, read_image, read_video_info, write_video


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory):
    """The same 40-frame index pattern (keyframes at least every 8 frames) in every format."""
    d = tmp_path_factory.mktemp("index")
    frames = index_frames(40)
    paths = {}
    for name in ("a.mp4", "a.webm", "a.mkv", "a.mov", "a.gif", "frames"):
        paths[name] = write_video(d / name, frames, fps=8, gop=8)
    write_avi(d / "a.avi", frames)
    paths["a.avi"] = d / "a.avi"
    return paths


def test_mp4_round_trip_psnr_above_35db(tmp_path):
    frames = smooth_frames(12)
    path = write_video(tmp_path / "smooth.mp4", frames, fps=8)
    back = read_clip(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert psnr(frames, back) > 35.0
    info = read_video_info(path)
    assert (info.num_frames, info.height, info.width, info.fps) == (12, 64, 64, 8.0)


@pytest.mark.parametrize("name", ["a.mp4", "a.webm", "a.mkv", "a.mov", "a.avi", "a.gif", "frames"])
def test_frames_10_to_20_stride_2_are_the_right_frames(index_videos, name):
    clip = read_clip(index_videos[name], start=10, num_frames=5, stride=2)
    assert clip.shape == (5, 48, 64, 3)
    assert decode_index(clip) == [10, 12, 14, 16, 18]
    # Read to the end with a stride, and a single frame near the end.
    assert decode_index(read_clip(index_videos[name], start=33, stride=3)) == [33, 36, 39]
    assert decode_index(read_clip(index_videos[name], start=39, num_frames=1)) == [39]


def test_container_reads_seek_instead_of_counting_from_the_start(index_videos, monkeypatch):
    def no_counting(*args, **kwargs):
        raise AssertionError("fell back to decoding from the first frame")

    opened = []  # per opened file: the time of every frame decoded from it
    real_open, real_decoded = video._open, video._decoded

    def recording_decoded(container, stream):
        for frame in real_decoded(container, stream):
            opened[-1].append(float(frame.pts * frame.time_base))
            yield frame

    monkeypatch.setattr(video, "_open", lambda p: opened.append([]) or real_open(p))
    monkeypatch.setattr(video, "_decoded", recording_decoded)
    monkeypatch.setattr(video, "_decode_counting", no_counting)
    import av

    for name in ("a.mp4", "a.webm", "a.avi"):
        with av.open(str(index_videos[name])) as c:
            s = c.streams.video[0]
            keys = [round(float(p.pts * s.time_base) * 8) for p in c.demux(s) if p.is_keyframe]
        key = max(k for k in keys if k <= 30)
        assert key > 0
        assert decode_index(read_clip(index_videos[name], 30, 3, 2)) == [30, 32, 34]
        first = round(opened[-1][0] * 8)
        assert first == key  # decoding began at the keyframe before frame 30, not at frame 0
        assert len(opened[-1]) == 34 - key + 1  # and stopped at the last wanted frame


def test_resize_short_side_and_centre_crop(tmp_path):
    frames = np.zeros((3, 48, 96, 3), np.uint8)
    frames[:, :, 24:72] = 255  # the centre half is white
    path = write_video(tmp_path / "wide", frames)  # png folder: lossless
    sq = read_clip(path, size=24)  # 48x96 -> 24x48 -> centre 24x24: all white
    assert sq.shape == (3, 24, 24, 3) and sq.min() > 250
    rect = read_clip(path, size=(16, 48))
    assert rect.shape == (3, 16, 48, 3)
    assert rect[:, :, :10].max() < 5 and rect[:, :, 14:34].min() > 250


def test_png_folder_round_trip_is_exact_and_single_images_read(tmp_path):
    frames = index_frames(5, 16, 64)
    path = write_video(tmp_path / "seq", frames)
    # the frames, and the marker that lets a later write replace this folder (vidm.outputs)
    assert sorted(p.name for p in path.iterdir()) == [".vidm-output"] + [f"{i:05d}.png" for i in range(5)]
    assert np.array_equal(read_clip(path), frames)
    assert read_video_info(path).num_frames == 5
    one = path / "00003.png"
    assert np.array_equal(read_image(one), frames[3])
    assert read_image(one, size=8).shape == (8, 8, 3)
    assert read_clip(one).shape == (1, 16, 64, 3)
    assert read_video_info(one).num_frames == 1


def test_odd_size_mp4_is_padded_with_a_warning(tmp_path):
    frames = smooth_frames(3, 33, 35)
    with pytest.warns(UserWarning, match="35x33 padded to 36x34"):  # WxH, as everywhere else
        path = write_video(tmp_path / "odd.mp4", frames)
    back = read_clip(path)
    assert back.shape == (3, 34, 36, 3)
    assert psnr(frames, back[:, :33, :35]) > 30


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    good = smooth_frames(4)
    target = write_video(tmp_path / "v.mp4", good)
    before = target.read_bytes()

    import av

    calls = []
    real = av.VideoFrame.from_ndarray

    def fail_on_third(arr, format):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(arr, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", fail_on_third)
    with pytest.raises(RuntimeError):
        write_video(target, good[::-1].copy())
    monkeypatch.undo()
    assert target.read_bytes() == before  # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temp files
    with pytest.raises(ShapeError):
        write_video(tmp_path / "f.mp4", good.astype(np.float32))
    with pytest.raises(VideoError, match="parent folder"):
        write_video(tmp_path / "missing" / "x.mp4", good)
    with pytest.raises(VideoError, match="cannot write"):
        write_video(tmp_path / "x.xyz", good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_bad_input_raises_typed_errors_naming_the_file(tmp_path, index_videos):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match="missing.mp4: no such file"):
        read_clip(missing)
    junk = tmp_path / "junk.mp4"
    junk.write_text("this is not a video")
    for fn in (read_clip, read_video_info):
        with pytest.raises(VideoError, match="junk.mp4: not a readable video"):
            fn(junk)
    # A file cut short is read as far as it decodes; the header still promises 40 frames.
    cut = tmp_path / "cut.mp4"
    truncate(index_videos["a.mp4"], cut, 0.6)
    info = read_video_info(cut, verify=True)
    assert info.header_frames == 40 and 0 < info.num_frames < 40
    assert len(read_clip(cut)) == info.num_frames
    with pytest.raises(NotEnoughFramesError, match=f"cut.mp4: needs frame {info.num_frames}"):
        read_clip(cut, start=info.num_frames - 1, num_frames=2)
    # Only a file of which no frame decodes is unreadable.
    blank = tmp_path / "blank.mp4"
    blank_packets(index_videos["a.mp4"], blank)
    for fn in (read_clip, read_video_info, lambda p: read_video_info(p, verify=True)):
        with pytest.raises(VideoError, match="blank.mp4: no frame decodes"):
            fn(blank)
    with pytest.raises(NotEnoughFramesError, match=r"a.mp4: needs frame 48 .* has 40 frames"):
        read_clip(index_videos["a.mp4"], start=30, num_frames=10, stride=2)
    with pytest.raises(NotEnoughFramesError, match="a.webm"):  # count unknown until the end
        read_clip(index_videos["a.webm"], start=35, num_frames=10)
    with pytest.raises(NotEnoughFramesError, match="frames"):
        read_clip(index_videos["frames"], start=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing half-written, nothing warned
        with pytest.raises(VideoError, match="not a readable image"):
            read_image(junk.rename(tmp_path / "junk.png"))
