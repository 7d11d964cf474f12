"""VideoFolder decode throughput: clips/s for T-frame clips through a DataLoader.

    python scripts/bench_data.py                      # 64 synthetic 64x64 videos, 48 frames
    python scripts/bench_data.py --data DIR --size 64 --frames 16 --workers 0 2

Prints the median clips/s over `--repeats` full passes (epochs) for each worker count; the
first pass (worker start-up, index build, page cache) is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder of videos (default: make a synthetic set in /tmp)")
    ap.add_argument("--videos", type=int, default=64, help="synthetic videos to make")
    ap.add_argument("--video-frames", type=int, default=48, help="frames per synthetic video")
    ap.add_argument("--video-size", type=int, default=64, help="synthetic video size")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (T)")
    ap.add_argument("--size", type=int, default=64, help="clip size")
    ap.add_argument("--stride", type=int, nargs="+", default=[1], help="stride or lo hi")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from vidm.data import VideoFolder
    from vidm.data.synth import generate_dataset

    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="vidm_bench_")
        data = tmp.name
        generate_dataset(data, args.videos, args.video_frames, args.video_size, seed=0,
                         workers=2, progress=False)
    stride = args.stride[0] if len(args.stride) == 1 else tuple(args.stride)
    ds = VideoFolder(data, num_frames=args.frames, stride=stride, size=args.size, flip=True)
    print(f"{len(ds)} videos in {data}; clips of {args.frames} frames at {args.size}x{args.size}, "
          f"stride {stride}, batch {args.batch}; torch threads {torch.get_num_threads()}")
    for workers in args.workers:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch, shuffle=True, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
        rates = []
        for epoch in range(args.repeats + 1):
            ds.set_epoch(epoch)
            t0 = time.perf_counter()
            n = sum(batch["video"].shape[0] for batch in loader)
            if epoch:  # epoch 0 warms up
                rates.append(n / (time.perf_counter() - t0))
        print(f"num_workers={workers}: median {statistics.median(rates):.1f} clips/s "
              f"({statistics.median(rates) * args.frames:.0f} frames/s; "
              f"min {min(rates):.1f}, max {max(rates):.1f}, {args.repeats} passes of {n} clips)")
        del loader
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
