"""Golden frame indices for the samplers, worked out by hand from the training code's rules."""
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime.sampling import (
    clip4clip_indices,
    fixed_fps_indices,
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
])
def test_bad_arguments_are_clear_errors(call):
    with pytest.raises(VlrtError):
        call()
