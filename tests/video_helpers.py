"""Test videos for the video I/O and dataset tests (small, made on the fly)."""

from __future__ import annotations

import numpy as np

BITS = 6  # frame index drawn as 6 black/white column blocks: robust to H.264 at any crf
BLOCK = 10


def index_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): frame t shows the binary digits of t as white/black columns."""
    frames = np.full((num_frames, height, width, 3), 128, np.uint8)
    for t in range(num_frames):
        for b in range(BITS):
            frames[t, :, b * BLOCK:(b + 1) * BLOCK] = 255 if (t >> b) & 1 else 0
    return frames


def decode_index(frames: np.ndarray) -> list[int]:
    """Frame indices drawn by `index_frames`, read back from uint8 (T, H, W, 3) frames
    at their native size."""
    h = frames.shape[1]
    out = []
    for f in frames:
        bits = [f[h // 4:3 * h // 4, b * BLOCK + 2:(b + 1) * BLOCK - 2].mean() > 127
                for b in range(BITS)]
        out.append(sum(int(v) << b for b, v in enumerate(bits)))
    return out


def smooth_frames(num_frames: int, height: int = 64, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): slowly moving smooth colour gradients (no sharp chroma edges,
    which yuv420p subsampling would blur)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(num_frames):
        r = 128 + 90 * np.sin(2 * np.pi * (x + 2 * t) / width)
        g = 128 + 90 * np.cos(2 * np.pi * (y - t) / height)
        b = 128 + 60 * np.sin(2 * np.pi * (x + y + 3 * t) / (width + height))
        frames.append(np.stack([r, g, b], -1))
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def truncate(src, dst, fraction: float = 0.6) -> None:
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def write_avi(path, frames: np.ndarray, fps: int = 8, gop: int = 8) -> None:
    """MPEG-4 part 2 in AVI (vidm writes no .avi itself; reading it must still work)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"qscale": "2"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_pyav(path, frames: np.ndarray, codec: str, format: str | None = None, fps: int = 8,
               gop: int = 8, pts_step: int = 1) -> None:
    """Encode with PyAV directly (formats `write_video` does not write: mpg, ts, flv, ...).
    `pts_step` > 1 leaves gaps in the timestamps (frame i at time i * pts_step / fps), as in
    AVI files whose header counts time slots rather than frames."""
    import av

    with av.open(str(path), "w", format=format) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.gop_size = gop
        if codec in ("mpeg4", "mpeg2video", "flv1", "msmpeg4", "wmv2"):
            s.options = {"qscale": "2"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts_step != 1:
                frame.pts = i * pts_step
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def blank_packets(src, dst, last_only: bool = False) -> None:
    """Copy `src` with the bytes of its video packets zeroed (all of them, or only the one
    shown last): the container still lists every frame, but the blanked ones do not decode."""
    import av

    with av.open(str(src)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    if last_only:
        packets = [max(packets)]
    data = bytearray(open(src, "rb").read())
    for _, pos, size in packets:
        data[pos:pos + size] = bytes(size)
    with open(dst, "wb") as f:
        f.write(data)
