"""Colour-centroid track length of (generated) synthetic videos: how long each object found in
frame 0 by its palette colour keeps that colour near its last position (vidm/eval/colour_tracks.py).

    python scripts/colour_tracks.py out_0.mp4 out_1.mp4
    python scripts/colour_tracks.py /tmp/gen /tmp/real --max-frames 32 --json

Folders are searched recursively for videos (and numbered-image folders). Prints one line per
video and the totals pooled over all objects; --json prints the whole summary instead.
Bad input gives one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "colour_tracks"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 1, as for any other bad input
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(1)


def _videos(paths: list[str]) -> list[Path]:
    from vidm.data.index import find_videos
    from vidm.errors import NoVideosError, VideoError

    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise VideoError(f"{p}: no such file or folder")
        if p.is_dir():  # videos under it; a folder of numbered frames is itself one video
            found = find_videos(p)
            if not found:
                raise NoVideosError(f"{p}: no videos in this folder")
            out += found
        else:
            out.append(p)
    return out


def main(argv=None) -> int:
    ap = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER")
    ap.add_argument("--tol", type=float, default=80.0, help="RGB distance for a pixel to match a colour (default 80)")
    ap.add_argument("--min-pixels", type=int, default=10, help="smallest blob that counts, in pixels (default 10)")
    ap.add_argument("--max-jump", type=float, default=None, metavar="PX",
                    help="largest centroid move per frame, px (default 0.25 x the longer frame side)")
    ap.add_argument("--join-radius", type=int, default=2, metavar="PX",
                    help="pieces of a colour this close count as one blob (default 2; 0 = plain components)")
    ap.add_argument("--max-frames", type=int, default=None, metavar="N", help="read at most the first N frames")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)

    from vidm.errors import ConfigError, VidmError

    try:
        if args.max_frames is not None and args.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
        from vidm.eval.colour_tracks import summarise
        from vidm.eval.report import dumps, fmt
        from vidm.video import read_clip

        paths = _videos(args.inputs)
        videos = [read_clip(p, num_frames=args.max_frames, partial=args.max_frames is not None) for p in paths]
        s = summarise(videos, tol=args.tol, min_pixels=args.min_pixels, max_jump=args.max_jump,
                      join_radius=args.join_radius)
    except VidmError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    if args.json:
        s["paths"] = [str(p) for p in paths]
        print(dumps(s), end="")
        return 0
    from vidm.args import plural

    for p, v in zip(paths, s["per_video"]):
        print(f"{p}: {v['frames']} frames, {plural(v['objects'], 'object')}, "
              f"track {fmt(v['mean_track_frames'], 2)} frames ({fmt(v['mean_track_fraction'], 3)} of T), "
              f"all T {fmt(v['full_track_share'], 3)}")
    print(f"total: {plural(s['videos'], 'video')} ({s['videos_without_objects']} without objects), "
          f"{plural(s['objects'], 'object')} ({fmt(s['objects_per_video'], 2)} / video), "
          f"mean track {fmt(s['mean_track_frames'], 2)} frames, {fmt(s['mean_track_fraction'], 3)} of T, "
          f"tracked all T {fmt(s['full_track_share'], 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
