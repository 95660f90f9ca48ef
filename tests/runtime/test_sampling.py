"""Golden frame indices for the samplers, worked out by hand from the training code's rules."""
from fractions import Fraction

import numpy as np
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime.sampling import (
    clip4clip_indices,
    fixed_fps_indices,
    fps_timeline_indices,
    segment_middle_indices,
    slice_frames,
)


def test_clip4clip_one_frame_per_second():
    # 10 s at 30 fps: seconds 0..10 -> frames 0, 30, ..., 300; frame 300 is past the end.
    assert clip4clip_indices(300, 30.0, max_frames=12) == list(range(0, 300, 30))


def test_clip4clip_linspace_down_to_max_frames():
    # 20 s at 25 fps -> 20 frames; linspace(0, 19, 12) cast to int picks these positions.
    positions = [0, 1, 3, 5, 6, 8, 10, 12, 13, 15, 17, 19]
    assert clip4clip_indices(500, 25.0, max_frames=12) == [25 * p for p in positions]


def test_clip4clip_truncates_the_rate_and_keeps_a_partial_last_second():
    # 29.97 fps is used as 29; 100 frames -> seconds 0..4 -> 0, 29, 58, 87 (116 is past the end).
    assert clip4clip_indices(100, 29.97, max_frames=12) == [0, 29, 58, 87]


def test_clip4clip_head_and_tail():
    assert clip4clip_indices(500, 25.0, max_frames=3, slice="head") == [0, 25, 50]
    assert clip4clip_indices(500, 25.0, max_frames=3, slice="tail") == [425, 450, 475]


def test_clip4clip_two_frames_per_second():
    # sample_fp 2 at 30 fps: offsets 0 and 15 within each second.
    assert clip4clip_indices(61, 30.0, max_frames=12, sample_fps=2) == [0, 15, 30, 45, 60]


def test_short_video_gives_fewer_frames_not_duplicates():
    assert clip4clip_indices(10, 30.0, max_frames=12) == [0]
    assert segment_middle_indices(3, num_segments=8) == [0, 1, 2]
    assert clip4clip_indices(0, 30.0, max_frames=12) == []


def test_segment_middle():
    # edges linspace(0, 100, 5) = 0, 25, 50, 75, 100 -> middles (0+24)//2, (25+49)//2, ...
    assert segment_middle_indices(100, num_segments=4) == [12, 37, 62, 87]
    # edges linspace(0, 10, 4) = 0, 3.33, 6.67, 10 -> 0, 3, 6, 10 -> 1, 4, 7... (6+9)//2 = 7
    assert segment_middle_indices(10, num_segments=3) == [1, 4, 7]


def test_fixed_fps_uses_timestamps():
    # Variable frame rate: frames at 0, 0.1, 0.2, then a 1.5 s hold, then 1.8, 1.9, 2.6.
    ts = [0.0, 0.1, 0.2, 1.7, 1.8, 1.9, 2.6]
    assert fixed_fps_indices(ts, fps=1.0, max_frames=12) == [0, 2, 5]
    # A stream that starts at 5 s samples at 5, 6, 7 s of presentation time.
    assert fixed_fps_indices([5.0, 5.5, 6.0, 6.5, 7.0], fps=1.0, max_frames=12) == [0, 2, 4]
    assert fixed_fps_indices([5.0, 5.5, 6.0, 6.5, 7.0], fps=2.0, max_frames=3) == [0, 1, 2]


@pytest.mark.parametrize("call", [
    lambda: clip4clip_indices(10, 0.5, max_frames=4),
    lambda: clip4clip_indices(10, 30, max_frames=0),
    lambda: fixed_fps_indices([0.0, 1.0], fps=0, max_frames=4),
    lambda: fixed_fps_indices([1.0, 0.0], fps=1, max_frames=4),
    lambda: slice_frames([1, 2, 3], max_frames=2, mode="middle"),
    lambda: fps_timeline_indices([0.0, 1.0, 0.5], 1.5, max_frames=4),
    lambda: fps_timeline_indices([0.0, 1.0], 2.0, max_frames=0),
])
def test_bad_arguments_are_clear_errors(call):
    with pytest.raises(VlrtError):
        call()


def cfr(num_frames: int, rate: int, start: float = 0.0) -> tuple[list[float], float]:
    """Timestamps and duration as `probe` gives them for a constant-rate file."""
    ts = [start + i / rate for i in range(num_frames)]
    return ts, ts[-1] - ts[0] + 1 / rate


@pytest.mark.parametrize("rate", [1, 5, 10, 24, 25, 30, 50, 60])
@pytest.mark.parametrize("start", [0.0, 7.3])
def test_fps_timeline_is_clip4clip_on_constant_integer_rates(rate, start):
    """Every length from 1 frame to 40 s and past whole seconds, every cut: the same indices."""
    lengths = sorted({1, 2, rate - 1, rate, rate + 1, 3 * rate, 3 * rate + 1, 12 * rate - 1, 40 * rate + 7} - {0})
    sample_rates = [1.0] + [float(k) for k in (2, 5) if rate % k == 0]  # those that divide the rate
    compared = 0
    for n in lengths:
        ts, duration = cfr(n, rate, start)
        for max_frames in (1, 4, 12, 64):
            for slice_mode in ("uniform", "head", "tail"):
                for sample_fps in sample_rates:
                    want = clip4clip_indices(n, float(rate), max_frames=max_frames, sample_fps=sample_fps,
                                             slice=slice_mode)
                    got = fps_timeline_indices(ts, duration, max_frames=max_frames, sample_fps=sample_fps,
                                               slice=slice_mode)
                    assert got == want, (rate, start, n, max_frames, slice_mode, sample_fps)
                    compared += 1
    assert compared == len(lengths) * 4 * 3 * len(sample_rates) >= 5 * 12


def test_fps_timeline_on_29_97_fps_stays_on_the_timeline():
    """300 frames at 30000/1001 fps (10.01 s): the frame shown at each second t is floor(t * 29.97);
    CLIP4Clip counts 29 frames a second and is 9 frames (0.3 s) behind by the tenth."""
    ts = [float(i * Fraction(1001, 30000)) for i in range(300)]
    duration = ts[-1] + 1001 / 30000
    assert fps_timeline_indices(ts, duration, max_frames=12) == [0, 29, 59, 89, 119, 149, 179, 209, 239, 269, 299]
    assert clip4clip_indices(300, 30000 / 1001, max_frames=12) == [0, 29, 58, 87, 116, 145, 174, 203, 232, 261, 290]
    # linspace(0, 10, 4) = 0, 3.33, 6.67, 10 -> ticks 0, 3, 6, 10.
    assert fps_timeline_indices(ts, duration, max_frames=4) == [0, 89, 179, 299]


def test_fps_timeline_on_variable_frame_rate():
    """Frames at steps of 1, 3, 2, 1, 1, 2 ticks of 1/48 s (tests/video_assets.py's VFR pattern):
    frame 6q + r is at 10q + (0, 1, 4, 6, 7, 8)[r] ticks. Second s is tick 48 s: s = 1 -> q 4,
    8 ticks on -> r 5 -> frame 29; s = 4 -> tick 192 = 190 + 2 -> r 1 (tick 191) -> frame 115;
    0.5 s -> tick 24 = 20 + 4 -> r 2 -> frame 14."""
    offsets = (0, 1, 4, 6, 7, 8)
    ts = [(10 * (i // 6) + offsets[i % 6]) / 48 for i in range(200)]  # last: 331 ticks, 6.896 s
    duration = ts[-1] + 10 / 6 / 48  # one mean frame interval
    assert fps_timeline_indices(ts, duration, max_frames=12) == [0, 29, 57, 86, 115, 144, 173]
    assert fps_timeline_indices(ts, duration, max_frames=3) == [0, 86, 173]  # linspace(0, 6, 3)
    assert fps_timeline_indices(ts, duration, max_frames=12, sample_fps=2)[:5] == [0, 14, 29, 43, 57]


def test_fps_timeline_picks_a_held_frame_at_each_tick_and_honours_options():
    ts, duration = [10.0, 10.1, 12.5, 12.6], 2.7  # frame 1 is on screen from 0.1 s to 2.5 s
    assert fps_timeline_indices(ts, duration, max_frames=12) == [0, 1, 1]
    assert fps_timeline_indices(ts, duration, max_frames=12, sample_fps=0) == [0, 1, 2, 3]
    assert fps_timeline_indices(ts, duration, max_frames=2, sample_fps=0, slice="tail") == [2, 3]
    assert fps_timeline_indices([5.0], 0.0, max_frames=4) == [0]  # a still: tick 0 only
    assert fps_timeline_indices([], 0.0, max_frames=4) == []
    # A tick exactly on the end belongs to no frame: 2 s of 1-fps frames are ticks 0 and 1.
    assert fps_timeline_indices([0.0, 1.0], float(np.float64(1.0) + 1.0), max_frames=4) == [0, 1]
