"""Object-position error: colour centroids, visibility rules, misses, synthetic ground truth."""

import numpy as np
import pytest

from vidm.eval.positions import detect_centroids, object_position_error

cv2 = pytest.importorskip("cv2")
RED, BLUE = (230, 30, 30), (35, 70, 240)


def _frame(discs, size=64):
    img = np.full((size, size, 3), 120, np.uint8)
    for (x, y), colour in discs:
        # cv2 draws with pixel centres at integers; the JSON puts them at +0.5, shift 4 bits.
        cv2.circle(img, (int(round((x - 0.5) * 16)), int(round((y - 0.5) * 16))), 6 * 16, colour, -1, cv2.LINE_AA, 4)
    return img


def _meta(tracks, visible, size=64):
    objects = [
        {"colour": list(c), "x": [p[0] for p in xy], "y": [p[1] for p in xy], "visible_fraction": vis}
        for (c, xy), vis in zip(tracks, visible)
    ]
    T = len(tracks[0][1])
    return {"format": "vidm-synth-1", "num_frames": T, "height": size, "width": size, "objects": objects}


def test_disc_centroid_within_one_pixel():
    pos = [(20.3, 30.7), (41.6, 12.2)]
    frames = np.stack([_frame([(p, RED)]) for p in pos])
    c = detect_centroids(frames, [RED])
    assert np.linalg.norm(c[:, 0] - np.array(pos), axis=-1).max() < 1.0
    err = object_position_error(frames, _meta([(RED, pos)], [[1.0, 1.0]]))
    assert err.per_frame.shape == (2,) and err.per_frame.max() < 1.0 and err.miss_rate == 0


def test_hidden_objects_not_scored_and_misses_penalised():
    red_xy, blue_xy = [(20, 20), (30, 20), (40, 20)], [(44, 44), (44, 44), (44, 44)]
    # Frame 0: both drawn. Frame 1: blue hidden (visible_fraction 0) and absent. Frame 2: blue
    # should show but the "generated" frame lacks it -> a miss.
    frames = np.stack(
        [_frame([(red_xy[0], RED), (blue_xy[0], BLUE)]), _frame([(red_xy[1], RED)]), _frame([(red_xy[2], RED)])]
    )
    meta = _meta([(RED, red_xy), (BLUE, blue_xy)], [[1, 1, 1], [1, 0, 1]])
    err = object_position_error(frames, meta, miss_penalty=50.0)
    assert err.scored.tolist() == [[True, True], [True, False], [True, True]]
    assert err.per_frame[0] < 1 and err.per_frame[1] < 1
    assert 24 < err.per_frame[2] < 26  # (red ~0 + blue 50) / 2
    assert err.miss_rate == pytest.approx(1 / 5)
    # frame_indices pick ground-truth frames for a subset (e.g. the in-betweens of a clip).
    sub = object_position_error(frames[1:2], meta, frame_indices=[1])
    assert sub.per_frame[0] < 1


def test_two_ghosts_do_not_average_to_the_midpoint():
    # A cross-fade-like frame: a full disc at x=16 and a fainter, smaller one at x=48. The
    # largest blob is taken, so the error is ~16 px, not ~0 at the midpoint.
    img = _frame([((16, 32), RED)])
    cv2.circle(img, (48, 32), 3, RED, -1)
    err = object_position_error(img[None], _meta([(RED, [(32, 32)])], [[1.0]]))
    assert 14 < err.mean < 18


def test_synthetic_ground_truth_frames_score_near_zero():
    synth = pytest.importorskip("vidm.data.synth")
    frames, meta = synth.render_video(7, 0, num_frames=6, size=64)
    err = object_position_error(frames, meta)
    assert err.scored.any()
    assert err.mean < 1.0 and err.miss_rate == 0
