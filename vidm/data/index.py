"""Index of the usable videos under a folder, cached in a sidecar file.

Probing a video (opening it and decoding every frame to count those that decode) costs a read
of the whole file, so the result is kept in `<root>/.vidm_index.json`, keyed by each file's
relative path, size and modification time. A later scan re-probes only files that are new or
changed, and drops entries for files that are gone. When the root is not writable the index
lives in memory only.

What counts as a video is decided by probing, not by the name: every file under the root that
might be one (`vidm.video.is_video_candidate`: not hidden, not an image, not an obvious text /
code / data file) is handed to FFmpeg. A file it cannot open as a video is ignored, unless its
name says video (`VIDEO_EXTS`: then it is listed as unreadable); a file that opens but of which
no frame decodes is unreadable. A video's frame count is the number of frames that decode; the
container header's count is kept too (`header_frames`), as it can be wrong. With
`image_mode="sequence"` (default) every folder that directly holds two or more images is a video
(a numbered image sequence); with `image_mode="single"` every image file is a one-frame video
(for image / content-model training). Hidden files and folders (".name") are ignored.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from vidm.errors import VideoError, VidmError
from vidm.video import (NotAVideoError, has_video_ext, is_image_file, is_video_candidate,
                        read_video_info)

INDEX_NAME = ".vidm_index.json"
INDEX_VERSION = 2  # 2: frames counted by decoding, header count kept, non-videos remembered
IMAGE_MODES = ("sequence", "single", "none")


@dataclass(frozen=True)
class VideoEntry:
    path: str  # root / relative path
    num_frames: int  # frames that decode (with verify; else the header's count)
    height: int
    width: int
    fps: float | None
    header_frames: int | None = None  # the container header's count, None if it has none


@dataclass(frozen=True)
class SkippedFile:
    path: str  # root / relative path
    reason: str  # one line


@dataclass
class VideoIndex:
    root: Path
    videos: list[VideoEntry]
    skipped: list[SkippedFile]
    cache_written: bool  # False when the sidecar could not be written (read-only root)


def find_videos(root: str | os.PathLike, image_mode: str = "sequence") -> list[Path]:
    """Files under `root` that may be videos (by name; `build_index` probes them) and image
    sequences, sorted by path (recursive)."""
    if image_mode not in IMAGE_MODES:
        raise VidmError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [f for f in filenames if not f.startswith(".")]
        found += [Path(dirpath, f) for f in names if is_video_candidate(f)]
        images = [Path(dirpath, f) for f in names if is_image_file(f)]
        if image_mode == "single":
            found += images
        elif image_mode == "sequence" and len(images) >= 2:
            found.append(Path(dirpath))
    return sorted(found)


def _signature(path: Path) -> dict:
    """What must stay equal for a cached probe to be reused."""
    if path.is_dir():
        stats = [f.stat() for f in path.iterdir() if f.is_file() and is_image_file(f)]
        return {"size": sum(s.st_size for s in stats), "count": len(stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_cache(index_path: Path) -> dict:
    try:
        data = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_cache(index_path: Path, entries: dict) -> bool:
    tmp = index_path.with_name(f"{index_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "entries": entries},
                                  separators=(",", ":")))
        os.replace(tmp, index_path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def build_index(root: str | os.PathLike, image_mode: str = "sequence", cache: bool = True,
                verify: bool = True, progress: bool = False) -> VideoIndex:
    """Probe every file under `root` that may be a video (reusing the sidecar cache) and sort
    them into usable videos, skipped (unreadable) files and non-videos (left out of both).
    `verify=True` counts every video's frames by decoding them (else the header's count is
    taken). Raises VideoError when `root` is missing."""
    from tqdm import tqdm

    root = Path(root)
    if not root.exists():
        raise VideoError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise VideoError(f"{root}: not a folder")
    index_path = root / INDEX_NAME
    cached = _load_cache(index_path) if cache else {}
    entries: dict[str, dict] = {}
    changed = False
    paths = find_videos(root, image_mode)
    for path in tqdm(paths, desc="indexing videos", unit="video", leave=False,
                     disable=None if progress else True):  # None: only on a terminal
        key = path.relative_to(root).as_posix()
        try:
            sig = _signature(path)
        except OSError as e:
            entries[key] = {"error": f"cannot stat ({e.strerror})"}
            continue
        old = cached.get(key)
        if old is not None and old.get("sig") == sig and (
                old.get("not_video") or old.get("verified", False) >= verify):
            entries[key] = old
            continue
        changed = True
        try:
            info = read_video_info(path, verify=verify)
            entries[key] = {"sig": sig, "verified": verify, **asdict(info)}
        except NotAVideoError as e:
            if has_video_ext(path):  # named as a video: a broken one
                entries[key] = {"sig": sig, "verified": verify,
                                "error": _strip_path(str(e), path)}
            else:  # FFmpeg cannot open it and the name says nothing: not a video
                entries[key] = {"sig": sig, "not_video": True}
        except VideoError as e:
            entries[key] = {"sig": sig, "verified": verify, "error": _strip_path(str(e), path)}
    changed = changed or set(cached) != set(entries)
    written = cache and (not changed or _save_cache(index_path, entries))

    videos, skipped = [], []
    for key in sorted(entries):
        e, full = entries[key], str(root / key)
        if e.get("not_video"):
            continue
        if "error" in e:
            skipped.append(SkippedFile(full, e["error"]))
        else:
            header = e.get("header_frames")
            videos.append(VideoEntry(full, int(e["num_frames"]), int(e["height"]),
                                     int(e["width"]), e.get("fps"),
                                     None if header is None else int(header)))
    return VideoIndex(root, videos, skipped, bool(written))


def _strip_path(msg: str, path: Path) -> str:
    # Errors name the file; the index stores the reason alone (the key is the path).
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg
