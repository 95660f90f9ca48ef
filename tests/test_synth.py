"""The synthetic video generator: deterministic, disjoint splits, captions that need time."""
import numpy as np
from video_assets import frame_index  # noqa: F401  (shared test helpers import cleanly)

from vlrt import synth
from vlrt.runtime.video import probe, read_frames


def test_captions_are_unique_and_splits_disjoint():
    scenes = synth.all_scenes()
    captions = [s.caption for s in scenes]
    assert len(captions) == len(set(captions)) == 720
    train, test = {s.caption for s in synth.scenes("train")}, {s.caption for s in synth.scenes("test")}
    assert not train & test and len(train) + len(test) == 720
    assert 0.15 < len(test) / 720 < 0.25


def test_caption_grammar():
    s = synth.Scene(2, "small", "red", "circle", "left", "white")
    assert s.caption == "two small red circles move to the left on a white background"
    assert s.with_motion("still").caption == "two small red circles stay still on a white background"
    assert synth.Scene(1, "large", "blue", "square", "up", "black").caption == "a large blue square moves up on a black background"


def test_render_is_deterministic_and_moves():
    scene = synth.Scene(1, "large", "red", "square", "right", "black")
    a, b = synth.render(scene, seed=3), synth.render(scene, seed=3)
    assert a.shape == (16, 64, 64, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, synth.render(scene, seed=4))
    red = a[..., 0].astype(int) - a[..., 2].astype(int) > 100  # (T, H, W) object pixels
    xs = [np.nonzero(frame)[1].mean() for frame in red]
    assert xs[-1] - xs[0] > 25 and all(np.diff(xs) >= 0)  # moves right, ~55% of the frame


def test_one_frame_cannot_tell_left_from_right():
    base = synth.Scene(1, "small", "green", "circle", "left", "gray")

    def centroid_x(video):  # (T,) mean column of the object's pixels per frame
        return np.array([np.nonzero(f[..., 1].astype(int) - f[..., 0] > 40)[1].mean() for f in video])

    left = centroid_x(synth.render(base, seed=1))
    right = centroid_x(synth.render(base.with_motion("right"), seed=1))
    # Mid-clip the object sits in the same place either way; only the order of frames differs.
    assert abs(left[8] - right[8]) < 6 and right[-1] - left[-1] > 25 and left[0] - right[0] > 25


def test_written_mp4_decodes_to_the_rendered_frames(tmp_path):
    video = synth.render(synth.Scene(1, "large", "yellow", "triangle", "down", "white"), seed=0)
    path = synth.write_mp4(tmp_path / "clip.mp4", video)
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (16, 64, 64)
    decoded = np.stack(read_frames(path, range(16)))
    assert np.abs(decoded.astype(int) - video).mean() < 4  # crf 18 H.264 on 4:2:0 chroma
