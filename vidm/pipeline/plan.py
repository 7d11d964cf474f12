"""Which frames each motion window samples, for any length (pure functions, no torch).

A window is a sorted list of output positions (ints); the positions already made (given
frames or earlier windows) are its known frames, the rest are sampled. The motion model sees
at most `window` frames at once, so long requests are split:

- infill (interpolation): hierarchical. Key frames spread evenly over the whole gap first,
  then each gap between neighbouring keys is filled the same way, so 1 -> 64 in-betweens
  works with a 9-frame window and every frame is conditioned on frames on both sides.
- continuation (generation / prediction): left to right, each window carrying the last
  `context` made frames as known frames.
- upsampling (raise the frame rate by `factor`): left to right over the output positions,
  each window's first input gap already made by the window before, so neighbouring windows
  share frames and motion stays coherent.
"""

from __future__ import annotations


def _check_window(window: int) -> None:
    if window < 3:
        raise ValueError(f"a motion window must hold at least 3 frames, got {window}")


def spread(lo: int, hi: int, n: int) -> list[int]:
    """n distinct ints from lo to hi inclusive, as evenly spaced as rounding allows."""
    n = min(n, hi - lo + 1)
    if n == 1:
        return [lo]
    return sorted({lo + round(i * (hi - lo) / (n - 1)) for i in range(n)})


def plan_infill(num_total: int, window: int) -> list[list[int]]:
    """Windows that fill positions 1..num_total-2 given positions 0 and num_total-1."""
    _check_window(window)
    if num_total < 3:
        return []
    windows: list[list[int]] = []

    def fill(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        if hi - lo + 1 <= window:
            windows.append(list(range(lo, hi + 1)))
            return
        keys = spread(lo, hi, window)
        windows.append(keys)
        for a, b in zip(keys, keys[1:]):
            fill(a, b)

    fill(0, num_total - 1)
    return windows


def plan_continuation(num_given: int, num_total: int, window: int, context: int) -> list[list[int]]:
    """Windows that make positions num_given..num_total-1 after `num_given` given frames.

    Each window holds up to `context` of the latest made frames (known) and new frames after them.
    """
    _check_window(window)
    if num_given < 1:
        raise ValueError("continuation needs at least one given frame")
    context = max(1, min(context, window - 1))
    windows = []
    made = num_given
    while made < num_total:
        c = min(context, made)
        new = min(window - c, num_total - made)
        windows.append(list(range(made - c, made + new)))
        made += new
    return windows


def plan_upsample(num_inputs: int, factor: int, window: int) -> tuple[int, list[list[int]]]:
    """Raise the frame rate of `num_inputs` frames by `factor`.

    Input frame i sits at output position i * factor. Returns (num_output, windows). Where a
    window holds two or more input gaps, consecutive windows overlap by one whole gap, made by
    the earlier window and known to the later one. Where one gap does not fit in a window,
    each gap is filled hierarchically on its own.
    """
    _check_window(window)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    num_output = (num_inputs - 1) * factor + 1
    if factor == 1 or num_inputs < 2:
        return num_output, []
    gaps_per_window = (window - 1) // factor
    windows: list[list[int]] = []
    if gaps_per_window < 1:
        for g in range(num_inputs - 1):
            base = g * factor
            windows += [[base + p for p in w] for w in plan_infill(factor + 1, window)]
        return num_output, windows
    length = gaps_per_window * factor + 1
    step = max(1, gaps_per_window - 1) * factor  # overlap one gap when a window holds >= 2
    start = 0
    while True:
        end = min(start + length, num_output)
        windows.append(list(range(start, end)))
        if end >= num_output:
            break
        start += step
    return num_output, windows


def window_times(positions: list[int], frame_step: float, max_span: float) -> list[float]:
    """Model times for a window's positions: `frame_step` time units per output position,
    compressed so the window spans at most `max_span` (the longest span seen in training),
    starting at 0 relative to the window's first frame."""
    span = (positions[-1] - positions[0]) * frame_step
    scale = frame_step if span <= max_span or span == 0 else max_span / (positions[-1] - positions[0])
    return [(p - positions[0]) * scale for p in positions]
