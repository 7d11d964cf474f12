"""`vidm data ...`: synthetic data, folder info (and, later, latent caching).

The `data` group is extensible: another module adds a subcommand with
`get_data_subparsers(sub).add_parser(...)` (or by appending to `DATA_SUBCOMMANDS` here).
"""

from __future__ import annotations

import argparse

from vidm import args as argtypes
from vidm.args import plural
from vidm.outputs import OutputPlan, add_overwrite_arg


def _add_synth(dsub) -> None:
    p = dsub.add_parser(
        "synth", help="write a synthetic data set (mp4 + JSON ground truth)",
        description="Write N synthetic videos of coloured shapes (discs, squares, triangles, "
                    "sprites) moving over panning textured backgrounds: fast bounces, gravity "
                    "arcs, rotation, occlusion, objects entering and leaving. Next to each "
                    "NNNNN.mp4 goes NNNNN.json with every object's per-frame position, colour, "
                    "shape, size, depth and visibility. Same seed -> same videos, whatever "
                    "the worker count.")
    p.add_argument("--out", required=True, help="output folder (created; written whole, at the end)")
    p.add_argument("--videos", type=argtypes.positive_int, default=8, help="number of videos (default 8)")
    p.add_argument("--frames", type=argtypes.positive_int, default=24, help="frames per video (default 24)")
    p.add_argument("--size", type=argtypes.positive_int, default=64, help="frame height = width, even (default 64)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="random seed, 0 to 2**63-1 (default 0)")
    p.add_argument("--workers", type=argtypes.int_at_least(0), default=0,
                   help="render in this many processes (default 0: in this process)")
    p.add_argument("--fps", type=argtypes.positive_float, default=8, help="frame rate of the mp4 files (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_arg(p)
    p.set_defaults(func=run_synth)


def _add_info(dsub) -> None:
    p = dsub.add_parser(
        "info", help="count videos, frames and resolutions under a folder",
        description="Scan a folder recursively (or one video) and print the number of usable "
                    "videos, total frames, frames per video, resolution range, fps, each video "
                    "(for up to 50 videos, or with --list) and any unreadable files. What is a "
                    "video is decided by probing every file with FFmpeg, not by its name; "
                    "frames are counted by decoding them, and where the container's header "
                    "says otherwise both counts are shown. Exits 1 when no usable video is "
                    "found. The scan is cached in DIR/.vidm_index.json (when DIR is writable).")
    p.add_argument("path", metavar="DIR", help="folder of videos (or a single video)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the index")
    p.add_argument("--list", action="store_true",
                   help="list every video, however many (default: up to 50)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_info)


# Each entry adds one `vidm data <name>` parser; a new subcommand is one more entry here
# (or, from another command module listed after this one in COMMAND_MODULES,
# `get_data_subparsers(sub).add_parser(...)` inside its own `register`).
def _add_cache_latents(dsub) -> None:
    from vidm.commands.cache import add_cache_latents

    add_cache_latents(dsub)


DATA_SUBCOMMANDS = [("synth", _add_synth), ("info", _add_info), ("cache-latents", _add_cache_latents)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make, inspect and cache video data sets",
                       description="Make, inspect and cache video data sets.")
    p.set_defaults(_parser=p)
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.vidm_subparsers = dsub  # found again by get_data_subparsers
    for _, add in DATA_SUBCOMMANDS:
        add(dsub)


def get_data_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `vidm data` subparsers, given the top-level subparsers `register` was called with."""
    return sub.choices["data"].vidm_subparsers


def run_synth(args: argparse.Namespace) -> int:
    import time

    from vidm.data.synth import generate_dataset

    plan = OutputPlan(overwrite=args.overwrite)
    out = plan.folder(args.out, make_parents=True)
    plan.check()
    t0 = time.perf_counter()
    with plan.write() as temp:
        paths = generate_dataset(temp[out], args.videos, frames=args.frames, size=args.size,
                                 seed=args.seed, workers=args.workers, fps=args.fps,
                                 progress=not args.quiet)
    print(f"wrote {plural(len(paths), 'video')} ({plural(args.frames, 'frame')}, {args.size}x{args.size}) + JSON "
          f"to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


LIST_UP_TO = 50  # `vidm data info` lists each video when there are at most this many


def _video_line(v) -> str:
    """One video for `vidm data info`: size, fps, decoded frames and, where it differs, the
    container header's count ("455 frames; container says 456")."""
    fps = f"{v.fps:.3f}".rstrip("0").rstrip(".") + " fps" if v.fps else "fps unknown"
    line = f"{v.path}: {v.width}x{v.height}, {fps}, {plural(v.num_frames, 'frame')}"
    if _header_differs(v):
        line += f"; container says {v.header_frames}"
    return line


def _header_differs(v) -> bool:
    return v.header_frames is not None and v.header_frames != v.num_frames


def _summarize(videos) -> dict:
    frames = [v.num_frames for v in videos]
    hs, ws = [v.height for v in videos], [v.width for v in videos]
    fps = sorted({round(v.fps, 3) for v in videos if v.fps})
    return {"videos": len(videos), "frames": sum(frames), "frames_min": min(frames),
            "frames_max": max(frames), "height_min": min(hs), "height_max": max(hs),
            "width_min": min(ws), "width_max": max(ws), "fps": fps,
            "per_video": [{"path": v.path, "frames": v.num_frames,
                           "container_frames": v.header_frames, "width": v.width,
                           "height": v.height, "fps": v.fps} for v in videos]}


def run_info(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from vidm.data.index import VideoEntry, build_index
    from vidm.errors import NoVideosError, VideoError
    from vidm.video import read_video_info

    path = Path(args.path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory")
    if path.is_dir():
        index = build_index(path, cache=not args.no_cache, progress=True)
        videos, skipped = index.videos, index.skipped
    else:  # one file: its own error (VideoError, naming it) is the answer
        info = read_video_info(path, verify=True)
        videos = [VideoEntry(str(path), info.num_frames, info.height, info.width, info.fps,
                             info.header_frames)]
        skipped = []

    summary = _summarize(videos) if videos else {"videos": 0}
    summary["unreadable"] = [{"path": s.path, "reason": s.reason} for s in skipped]
    if args.json:
        print(json.dumps(summary, indent=2))
    elif videos:
        s = summary
        print(f"{path}: {plural(s['videos'], 'video')}, {plural(s['frames'], 'frame')}")
        print(f"  frames per video: min {s['frames_min']}, max {s['frames_max']}")
        print(f"  resolution (WxH): {s['width_min']}x{s['height_min']}"
              + ("" if (s["width_min"], s["height_min"]) == (s["width_max"], s["height_max"])
                 else f" to {s['width_max']}x{s['height_max']}")
              + ("" if s["width_min"] == s["width_max"] and s["height_min"] == s["height_max"]
                 else f" (width {s['width_min']}-{s['width_max']}, "
                      f"height {s['height_min']}-{s['height_max']})"))
        print(f"  fps: {', '.join(f'{f:g}' for f in s['fps']) or 'unknown'}")
        differ = [v for v in videos if _header_differs(v)]
        if differ:
            print(f"  frame count differs from the container header: {len(differ)} "
                  f"(frames that decode are used)")
        if args.list or len(videos) <= LIST_UP_TO:
            print("  videos:")
            for v in videos:
                print(f"    {_video_line(v)}")
        elif differ:
            print(f"  videos whose header count differs (--list shows all {len(videos)}):")
            for v in differ:
                print(f"    {_video_line(v)}")
    if skipped and not args.json:
        print(f"  unreadable: {len(skipped)}")
        for sk in skipped:
            print(f"    {sk.path}: {sk.reason}")
    if not videos:
        raise NoVideosError(f"{path}: no usable videos ({len(skipped)} unreadable)" if skipped
                            else f"{path}: no video files found")
    return 0
