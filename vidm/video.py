"""Video I/O at the uint8 boundary: frames are numpy uint8 arrays `(T, H, W, 3)` (RGB).

Frame `i` of a container is the `i`-th frame that decodes. The header's frame count is only a
hint (it can promise frames that are missing or do not decode): `read_video_info(verify=True)`
counts by decoding, and `read_clip` uses every frame that decodes. A packet the decoder rejects
is skipped; a file is unreadable only when no frame decodes at all.

Reading uses PyAV and *seeks*: `read_clip` jumps to the keyframe at or before the first wanted
frame and decodes forward from there, so a clip from the end of a long video costs about one
GOP of decoding, not the whole file. Seeking numbers the frames decoded after the seek from
the first one's timestamp (`start_time + i / fps`, constant frame rate), and trusts that only
where the window's timestamps are exactly those numbers (in any order: some files store decode
times, which come out shuffled); where they are not (gaps from dropped or undecodable frames,
sparse AVIs, variable-rate files, GIFs) the reader counts frames from the start instead.

A "video" is any of: a file FFmpeg opens with a video stream that yields a frame (mp4, webm,
mkv, avi, mov, gif, mpg, ts, flv, wmv, ...; decided by probing, not by the name), a folder of
numbered images (`frame_0001.png`, `2.jpg`, ... in natural sort order), or a single image
(one frame).

Writing is atomic: the output is written under a temporary name in the same folder and moved
into place with `os.replace`, so an error never leaves a half-written file behind. A png-frame
folder replaces only an empty folder or vidm's own earlier output (`vidm.outputs`). Writing is
reproducible: the same frames give the same bytes in any process (see `write_video`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np

from vidm.errors import NotEnoughFramesError, ShapeError, VideoError, warn

PathLike = Union[str, os.PathLike]
Size = Union[int, tuple[int, int], None]

# Names that say "video". Whether a file is one is decided by probing it (`is_video_file`); the
# name only decides what a file that fails the probe is: with one of these it is a broken video
# (reported as unreadable), without one it is simply not a video (ignored by folder scans).
VIDEO_EXTS = frozenset({
    ".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov", ".qt", ".gif", ".mpg", ".mpeg", ".m1v",
    ".m2v", ".mpe", ".mpv", ".vob", ".ts", ".mts", ".m2ts", ".m2t", ".flv", ".f4v",
    ".wmv", ".asf", ".ogv", ".ogm", ".3gp", ".3g2", ".mxf", ".dv", ".nut", ".divx", ".xvid",
    ".rm", ".rmvb", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc", ".ivf", ".mjpeg",
    ".mjpg", ".amv", ".mk3d", ".dav", ".swf"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
# Files never handed to FFmpeg: text, code, data, archives, weights. (Some it would even open:
# its "tty" demuxer shows .txt / .nfo / .asc files as a video of their text.)
NOT_VIDEO_EXTS = frozenset({
    ".txt", ".md", ".rst", ".nfo", ".asc", ".ans", ".diz", ".ice", ".art", ".vt", ".log",
    ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".csv", ".tsv",
    ".xml", ".html", ".htm", ".pdf", ".tex", ".py", ".pyc", ".ipynb", ".sh", ".bash", ".zsh",
    ".bat", ".ps1", ".js", ".c", ".h", ".cpp", ".hpp", ".cu", ".rs", ".go", ".java",
    ".srt", ".vtt", ".ass", ".ssa", ".sub", ".npy", ".npz", ".pt", ".pth", ".ckpt", ".bin",
    ".safetensors", ".onnx", ".pkl", ".pickle", ".h5", ".hdf5", ".parquet", ".arrow", ".db",
    ".sqlite", ".lock", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar",
    ".whl", ".deb", ".exe", ".so", ".dll", ".dylib", ".o", ".a"})
# Extensions `write_video` can produce, and the encoder used for each.
_WRITE_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                 ".webm": "libvpx-vp9"}


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # frames that decode (with verify=True; else the header's count)
    height: int
    width: int
    fps: float | None  # None where unknown (image folders, single images)
    header_frames: int | None = None  # what the container header says, None if it says nothing


class NotAVideoError(VideoError):
    """FFmpeg cannot open the file as a video at all (no known container, or no video stream).
    Folder scans ignore such files unless their name says video (`VIDEO_EXTS`)."""


# ----------------------------------------------------------------------------- helpers


def has_video_ext(path: PathLike) -> bool:
    """The name says video (`VIDEO_EXTS`). Says nothing about whether the file decodes."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def is_video_candidate(path: PathLike) -> bool:
    """Worth probing as a video, by name alone: not hidden, not an image, and not an obvious
    text / code / data file (`NOT_VIDEO_EXTS`)."""
    p = Path(path)
    return (not p.name.startswith(".") and not is_image_file(p)
            and p.suffix.lower() not in NOT_VIDEO_EXTS)


def is_video_file(path: PathLike) -> bool:
    """True when `path` is a file (not an image) that FFmpeg opens with a video stream and
    that yields at least one decoded frame. Decided by probing, whatever the name."""
    p = Path(path)
    if not p.is_file() or is_image_file(p):
        return False
    try:
        read_video_info(p)
    except VideoError:
        return False
    return True


def is_image_file(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def _natural_key(name: str) -> list:
    # "frame10" sorts after "frame9": compare digit runs as numbers.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_frames(folder: PathLike) -> list[Path]:
    """Image files directly inside `folder`, in natural (numbered) order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _normalize_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if len(size) != 2 or min(size) <= 0:
        raise ShapeError(f"size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _resize_plan(h: int, w: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Resize (h, w) so it covers `size` keeping the aspect ratio (short side to the target),
    then centre-crop. Returns (resized_h, resized_w, top, left)."""
    H, W = size
    scale = max(H / h, W / w)
    rh, rw = max(H, round(h * scale)), max(W, round(w * scale))
    return rh, rw, (rh - H) // 2, (rw - W) // 2


def _frame_to_array(frame, size: tuple[int, int] | None) -> np.ndarray:
    """av.VideoFrame -> uint8 (H, W, 3), resized (swscale, area filter when shrinking) and
    centre-cropped to `size`."""
    if size is None or (frame.height, frame.width) == size:
        return frame.to_ndarray(format="rgb24")
    rh, rw, top, left = _resize_plan(frame.height, frame.width, size)
    if (rh, rw) == (frame.height, frame.width):
        arr = frame.to_ndarray(format="rgb24")
    else:
        shrink = rh * rw < frame.height * frame.width
        arr = frame.to_ndarray(width=rw, height=rh, format="rgb24",
                               interpolation="AREA" if shrink else "BICUBIC")
    return np.ascontiguousarray(arr[top:top + size[0], left:left + size[1]])


def resize_crop(image: np.ndarray, size: Size) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 resized (short side) and centre-cropped to `size`."""
    import av

    size = _normalize_size(size)
    if size is None:
        return image
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return _frame_to_array(frame, size)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory")


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise NotAVideoError(f"{path}: not a readable video ({_short(e)})") from None
    if _video_stream(container) is None:
        container.close()
        raise NotAVideoError(f"{path}: no video stream")
    return container


def _video_stream(container):
    """The first video stream that is not a cover picture (mp3 / m4a art), or None."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _set_threads(stream) -> None:
    """Decoder threads for `stream`: frame threads pay off on big frames only. Small frames
    decode fastest on one thread, and extra decoder threads would fight torch's spinning
    OpenMP threads when reading in the main process. (Reading and counting use the same
    choice: on a damaged stream the two decoders can disagree on what decodes.)"""
    if stream.codec_context.width * stream.codec_context.height >= 320 * 240:
        stream.thread_type = "AUTO"
    else:
        stream.codec_context.thread_count = 1


def _decoded(container, stream):
    """Every frame of `stream` that decodes, in order, from the current position. A packet the
    decoder rejects is skipped (the frames after it still come); a read error ends the stream
    (the frames the decoder still holds come first)."""
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return  # the demuxer's last, empty packet has already drained the decoder
        except av.FFmpegError:
            break
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            continue
        yield from frames
    try:
        yield from stream.decode(None)
    except av.FFmpegError:
        pass


def iter_decoded(path: PathLike):
    """Every frame of a video file that decodes, in order, as PyAV VideoFrames (a generator that
    closes the file when done). Raises VideoError when the file opens as no video."""
    path = Path(path)
    _check_exists(path)
    container = _open(path)
    try:
        stream = _video_stream(container)
        if stream is None:
            raise NotAVideoError(f"{path}: no video stream")
        _set_threads(stream)
        yield from _decoded(container, stream)
    finally:
        container.close()


def host_available_memory() -> int | None:
    """Bytes of host memory available now (Linux MemAvailable), None if unknown: what bounds
    how many decoded frames a command may hold."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _short(e: BaseException) -> str:
    # FFmpeg messages repeat the file name; keep the reason only, on one line.
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split())


def _stream_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


# ----------------------------------------------------------------------------- reading


def read_image(path: PathLike, size: Size = None) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB, as an image viewer shows it: turned upright by its
    EXIF orientation (phone photos), alpha dropped, greyscale expanded, 16-bit images scaled to
    8 bits (65535 -> 255) and floating-point images read as [0, 1] (clipped) -> [0, 255]."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # a copy turned upright (or `im` when no EXIF says so)
            arr = _image_to_rgb8(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise VideoError(f"{path}: not a readable image ({_short(e)})") from None
    return resize_crop(arr, size)


def _image_to_rgb8(im) -> np.ndarray:
    """A PIL image of any mode -> uint8 (H, W, 3). Pillow's own convert("RGB") clips 16-bit and
    32-bit samples to 255 (a 16-bit greyscale PNG comes out white) and truncates floats (a
    [0, 1] float TIFF comes out black): those modes are scaled here instead."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F" or a.dtype.kind == "f":
            a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
            grey = np.clip(a, 0.0, 1.0) * 255.0
        else:
            # 16-bit samples (I;16*, or "I" holding a 16-bit PNG / TIFF): 0..65535 -> 0..255.
            grey = np.clip(a.astype(np.float64), 0, 65535) / 257.0
        g = np.rint(grey).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_video_info(path: PathLike, verify: bool = False) -> VideoInfo:
    """Frame count, size and fps of a video, image folder or image.

    Containers are probed: FFmpeg must open the file, find a video stream and decode a frame.
    Without `verify` the frame count is the header's (or, where it has none, the number of
    packets: demuxing only). `verify=True` decodes every frame and counts those that decode:
    the count to use (a header may promise frames that are not there or do not decode; the
    header's count is kept as `header_frames`). Raises NotAVideoError (a VideoError) when
    FFmpeg cannot open the file as a video, VideoError when no frame decodes.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        frames = list_image_frames(path)
        if not frames:
            raise VideoError(f"{path}: folder holds no image frames")
        h, w = read_image(frames[0]).shape[:2]
        if verify:
            for f in frames[1:]:
                if read_image(f).shape[:2] != (h, w):
                    raise VideoError(f"{f}: frame size differs from {frames[0].name} ({h}x{w})")
        return VideoInfo(len(frames), h, w, None, len(frames))
    if is_image_file(path):
        h, w = read_image(path).shape[:2]
        return VideoInfo(1, h, w, None, 1)

    import av

    container = _open(path)
    try:
        stream = _video_stream(container)
        _set_threads(stream)
        fps = _stream_fps(stream)
        header = stream.frames if stream.frames > 0 else None
        frames = _decoded(container, stream)
        first = next(frames, None)
        if first is None:
            raise VideoError(f"{path}: no frame decodes")
        height, width = first.height, first.width
        if verify:
            num_frames = 1 + sum(1 for _ in frames)
        elif header is not None:
            num_frames = header
        else:
            num_frames = None
    except av.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video ({_short(e)})") from None
    finally:
        container.close()
    if num_frames is None:  # no header count: count the packets (demuxing only)
        num_frames = _count_packets(path)
    if height <= 0 or width <= 0:
        raise VideoError(f"{path}: video stream has no frame size")
    return VideoInfo(max(num_frames, 1), height, width, fps, header)


def _count_packets(path: Path) -> int:
    import av

    container = _open(path)
    try:
        n = 0
        try:
            for packet in container.demux(_video_stream(container)):
                n += packet.size > 0  # the last packet of a stream is an empty flush packet
        except av.FFmpegError:
            pass  # a read error ends the count
        return n
    finally:
        container.close()


def read_clip(path: PathLike, start: int = 0, num_frames: int | None = None, stride: int = 1,
              size: Size = None, partial: bool = False) -> np.ndarray:
    """Frames `start, start + stride, ...` of a video -> uint8 (T, H, W, 3).

    `num_frames=None` reads to the end. `size`: int (resize the short side, centre-crop a
    square), (H, W) (resize to cover, centre-crop) or None (native size).
    Frames are counted as they decode, whatever the header says: a request inside what
    decodes works, one past it is NotEnoughFramesError, unless `partial`: then `num_frames`
    means "at most" and a video that ends first gives the frames it has (at least one).
    Only the frames asked for are decoded from a seek point on and kept: memory is bounded by
    the request, not by the video.
    Raises VideoError (missing, not a video, no frame decodes) or NotEnoughFramesError.
    """
    path = Path(path)
    _check_exists(path)
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise NotEnoughFramesError(f"{path}: invalid frame request start={start} "
                                   f"num_frames={num_frames} stride={stride}")
    size = _normalize_size(size)
    if path.is_dir():
        return _read_image_folder(path, start, num_frames, stride, size, partial)
    if is_image_file(path):
        return _read_image_folder_list(path, [path], start, num_frames, stride, size, partial)
    return _read_container(path, start, num_frames, stride, size, partial)


def read_last_frames(path: PathLike, num_frames: int, size: Size = None) -> np.ndarray:
    """The last `num_frames` frames that decode (all of them when the video is shorter) ->
    uint8 (T, H, W, 3), keeping at most `num_frames` frames in memory whatever the video's
    length. Seeks to where the header's frame count puts them and decodes to the end; where the
    header promises frames that are not there, counts from the start instead."""
    path = Path(path)
    _check_exists(path)
    if num_frames < 1:
        raise NotEnoughFramesError(f"{path}: invalid frame request num_frames={num_frames}")
    size = _normalize_size(size)
    if path.is_dir() or is_image_file(path):
        total = read_video_info(path).num_frames
        return read_clip(path, max(0, total - num_frames), size=size)
    info = read_video_info(path)  # the header's count: a hint, checked by what decodes
    start = max(0, (info.header_frames or 0) - num_frames)
    if start > 0:
        try:
            frames = _read_container(path, start, None, 1, size, keep_last=num_frames)
            if len(frames) == num_frames:
                return frames
        except NotEnoughFramesError:
            pass  # the header promised more frames than decode
    return _read_container(path, 0, None, 1, size, keep_last=num_frames)


def _wanted_indices(path: Path, total: int | None, start: int, num_frames: int | None,
                    stride: int, partial: bool = False) -> list[int] | None:
    """Frame indices to read, or None when the count is unknown and num_frames is None."""
    if partial and num_frames is not None and total is not None:
        if start >= total:
            raise NotEnoughFramesError(f"{path}: start frame {start} is past the end ({total} frames)")
        num_frames = min(num_frames, (total - 1 - start) // stride + 1)
    if num_frames is None:
        if total is None:
            return None
        num_frames = max(0, (total - 1 - start) // stride + 1)
        if num_frames == 0:
            raise NotEnoughFramesError(f"{path}: start frame {start} is past the end "
                                       f"({total} frames)")
    wanted = list(range(start, start + num_frames * stride, stride))
    if total is not None and wanted[-1] >= total:
        raise NotEnoughFramesError(_too_few(path, start, num_frames, stride, total))
    return wanted


def _too_few(path: Path, start: int, num_frames: int, stride: int, total: int) -> str:
    return (f"{path}: needs frame {start + (num_frames - 1) * stride} "
            f"({num_frames} frames from {start}, stride {stride}) but has {total} frames")


def _read_image_folder(folder: Path, start, num_frames, stride, size, partial=False) -> np.ndarray:
    frames = list_image_frames(folder)
    if not frames:
        raise VideoError(f"{folder}: folder holds no image frames")
    return _read_image_folder_list(folder, frames, start, num_frames, stride, size, partial)


def _read_image_folder_list(path: Path, frames: list[Path], start, num_frames, stride,
                            size, partial=False) -> np.ndarray:
    wanted = _wanted_indices(path, len(frames), start, num_frames, stride, partial)
    out = [read_image(frames[i], size) for i in wanted]
    if len({a.shape for a in out}) > 1:
        raise VideoError(f"{path}: frames differ in size; pass size= to resize them")
    return np.stack(out)


def _read_container(path: Path, start, num_frames, stride, size, partial=False,
                    keep_last: int | None = None) -> np.ndarray:
    """`keep_last`: keep only the last that many of the frames read (a bounded buffer)."""
    import av

    # The header's frame count is not trusted (it can promise frames that do not decode): the
    # request is checked against the frames that actually decode.
    wanted = _wanted_indices(path, None, start, num_frames, stride)  # None: to the end
    container = _open(path)
    try:
        stream = _video_stream(container)
        _set_threads(stream)
        result = None
        if container.format.name != "gif" and stream.time_base and _stream_fps(stream):
            try:
                result = _decode_seeking(container, stream, wanted, start, stride, size, keep_last)
            except av.FFmpegError:
                result = None  # the seek itself failed
        if result is None:  # timestamps unusable: count frames from the start instead
            try:
                container.seek(0)
            except av.FFmpegError:
                container.close()
                container = _open(path)
                stream = _video_stream(container)
                _set_threads(stream)
            result = _decode_counting(container, stream, wanted, start, stride, size, keep_last)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: corrupt video ({_short(e)})") from None
    finally:
        container.close()
    out, n_seen = result
    if n_seen == 0:
        raise VideoError(f"{path}: no frame decodes")
    if wanted is not None and len(out) < len(wanted) and not (partial and out):
        raise NotEnoughFramesError(_too_few(path, start, len(wanted), stride, n_seen))
    if not out:
        raise NotEnoughFramesError(f"{path}: start frame {start} is past the end "
                                   f"({n_seen} frames)")
    return np.stack(list(out))


_REORDER = 16  # frames decoded past the last wanted one, at most, to check a window's timestamps
_LATE = object()


def _frame_buffer(keep_last: int | None):
    from collections import deque

    return [] if keep_last is None else deque(maxlen=keep_last)


def _decode_seeking(container, stream, wanted, start, stride, size,
                    keep_last=None) -> tuple[list, int] | None:
    """Seek to the keyframe before `start` and decode forward. Returns (frames,
    1 + last index decoded), or None when the timestamps cannot be trusted to number the
    frames: then the caller counts frames from the start.

    Frames are numbered in the order they decode, from the first one's timestamp. That is
    trusted only when the window's timestamps are exactly those numbers, in some order: some
    files carry decode times as timestamps, which the decoder then hands out shuffled. A gap
    (a frame missing or undecodable, a sparse AVI), a repeat (variable frame rate) or nothing
    means None. A seek that lands after `start`, or where nothing decodes (mpeg-ps / ts seek
    by guessing), is retried from further back."""
    fps = _stream_fps(stream)
    rate = Fraction(fps).limit_denominator(1001)
    for back in (0, 1, 4, 16):  # seconds before `start`
        t = Fraction(start) / rate - back
        target = (stream.start_time or 0) + int(max(t, 0) / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        result = _decode_window(container, stream, wanted, start, stride, size, keep_last)
        if result is not _LATE:
            return result
        if t <= 0:
            return None
    return None


def _decode_window(container, stream, wanted, start, stride, size, keep_last=None):
    fps, tb, t0 = _stream_fps(stream), stream.time_base, stream.start_time or 0
    last = None if wanted is None else wanted[-1]
    out, seen, base, n = _frame_buffer(keep_last), set(), None, 0
    for frame in _decoded(container, stream):
        if frame.pts is None:
            return None
        stamp = round(float((frame.pts - t0) * tb) * fps)
        if base is None:
            if stamp > start:
                return _LATE
            base = stamp
        if stamp in seen:
            return None
        seen.add(stamp)
        idx, n = base + n, n + 1
        if last is None or idx <= last:
            if idx >= start and (idx - start) % stride == 0:
                out.append(_frame_to_array(frame, size))
        elif idx > last + _REORDER:
            return None  # the timestamps never closed up
        # Stop once past the last wanted frame with the timestamps seen so far exactly
        # base .. base + n - 1 (one frame alone proves nothing: look at the next one too).
        if last is not None and idx >= last and n >= 2 and min(seen) == base \
                and max(seen) == base + n - 1:
            break
    if base is None:
        return _LATE  # nothing decoded after the seek (landed at the very end)
    if min(seen) != base or max(seen) != base + n - 1:
        return None
    return out, base + n


def _decode_counting(container, stream, wanted, start, stride, size,
                     keep_last=None) -> tuple[list, int]:
    out, n_seen = _frame_buffer(keep_last), 0
    last = None if wanted is None else wanted[-1]
    for idx, frame in enumerate(_decoded(container, stream)):
        n_seen = idx + 1
        if idx >= start and (idx - start) % stride == 0:
            out.append(_frame_to_array(frame, size))
        if last is not None and idx >= last:
            break
    return out, n_seen


# ----------------------------------------------------------------------------- writing


def _as_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ShapeError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got "
                         f"{arr.dtype} {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def written_size(path: PathLike, height: int, width: int) -> tuple[int, int]:
    """(H, W) of the frames `write_video` stores for frames of `height` x `width` at `path`:
    H.264 / VP9 files (yuv420p) round odd sizes up by one edge-replicated row / column; GIF and
    png frames keep the size."""
    if Path(path).suffix.lower() in _WRITE_CODECS:
        return height + height % 2, width + width % 2
    return height, width


def write_video(path: PathLike, frames, fps: float = 8, crf: int = 18, gop: int = 16,
                threads: int = 1) -> Path:
    """Write uint8 (T, H, W, 3) frames, atomically. The format follows the path:
    .mp4/.mov/.mkv/.m4v (H.264, yuv420p), .webm (VP9), .gif, or a path without a suffix
    (a folder of numbered png files, `00000.png`, ...).

    H.264 yuv420p needs even sizes: odd heights/widths are padded by one edge-replicated
    row/column (with a warning). `gop`: keyframe interval (short GOPs keep seeking cheap).
    The same frames and settings give byte-identical files in every process (one encoder
    thread, bit-exact muxing); `threads=0` lets the encoder choose, faster on big frames but
    not guaranteed reproducible.
    """
    path = Path(path)
    arr = _as_frames(frames)
    if not isinstance(fps, (int, float, np.integer, np.floating)) or not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: fps must be a finite number > 0, got {fps}")
    suffix = path.suffix.lower()
    if suffix == "":
        _write_png_folder(path, arr)
    elif suffix == ".gif":
        _atomic_file(path, lambda tmp: _write_gif(tmp, arr, fps))
    elif suffix in _WRITE_CODECS:
        _atomic_file(path, lambda tmp: _write_container(tmp, arr, fps, _WRITE_CODECS[suffix],
                                                        crf, gop, threads, path))
    else:
        raise VideoError(f"{path}: cannot write '{suffix}' (use .mp4, .webm, .mkv, .mov, .gif "
                         f"or a folder path without a suffix)")
    return path


def _atomic_file(path: Path, write) -> None:
    if not path.parent.exists():
        raise VideoError(f"{path}: parent folder does not exist")
    # Same folder as the target so os.replace is a rename on one filesystem; suffix kept so
    # the muxer can guess the format from the name.
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_container(tmp: Path, arr: np.ndarray, fps, codec, crf, gop, threads,
                     path: Path) -> None:
    import av

    T, H, W, _ = arr.shape
    if H % 2 or W % 2:
        H2, W2 = written_size(path, H, W)
        warn(f"{path}: {W}x{H} padded to {W2}x{H2} (yuv420p needs even sizes)")
        arr = np.pad(arr, ((0, 0), (0, H2 - H), (0, W2 - W), (0, 0)), mode="edge")
        H, W = H2, W2
    # bitexact: no random or version-dependent header fields (Matroska/WebM write random
    # segment and track UIDs without it), so the same frames give the same bytes.
    options = {"fflags": "+bitexact"}
    if tmp.suffix.lower() in (".mp4", ".m4v", ".mov"):
        options["movflags"] = "+faststart"
    try:
        with av.open(str(tmp), "w", options=options) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.codec_context.gop_size = gop
            stream.codec_context.thread_count = threads
            # mbtree=0: with x264's macroblock-tree rate control, small frames (measured: 20x28 to
            # 64x64) encoded differently from one call to the next in one process, even on one
            # thread, as if it read leftover memory; without it every call gives the same bytes.
            stream.options = {"crf": str(crf), "x264-params": "mbtree=0"} if codec == "libx264" else {
                "crf": str(crf + 12), "b": "0", "deadline": "good", "cpu-used": "4"}
            for frame in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: could not write video ({_short(e)})") from None


def _write_gif(tmp: Path, arr: np.ndarray, fps) -> None:
    from PIL import Image

    # GIF stores delays in 1/100 s. Pillow merges identical consecutive frames into one
    # (keeping the timing), so a GIF may read back with fewer frames than were written.
    images = [Image.fromarray(f) for f in arr]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_png_folder(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    from vidm.outputs import replace_folder

    if path.exists() and not path.is_dir():
        raise VideoError(f"{path}: exists and is not a folder")
    parent = path.parent
    if not parent.exists():
        raise VideoError(f"{path}: parent folder does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: others could not read the frames
        digits = max(5, len(str(len(arr) - 1)))
        for i, frame in enumerate(arr):
            Image.fromarray(frame).save(tmp / f"{i:0{digits}d}.png")
        replace_folder(tmp, path)  # never over a folder holding files vidm did not write
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["iter_decoded", "VideoInfo", "NotAVideoError", "VIDEO_EXTS", "IMAGE_EXTS", "NOT_VIDEO_EXTS",
           "read_clip", "read_last_frames", "written_size", "read_video_info", "read_image", "write_video", "resize_crop",
           "list_image_frames", "is_video_file", "is_video_candidate", "has_video_ext",
           "is_image_file"]
