"""The synthetic video generator: deterministic, disjoint splits, captions that need time."""
import dataclasses

import numpy as np
import pytest
from video_assets import frame_index  # noqa: F401  (shared test helpers import cleanly)

from vlrt.bench import synth
from vlrt.runtime.video import probe, read_frames


def test_captions_are_unique_and_splits_disjoint():
    scenes = synth.all_scenes()
    captions = [s.caption for s in scenes]
    # 2 counts x 2 sizes x 4 colours x 3 shapes x 3 backgrounds x (4 directions x 2 speeds + still)
    assert len(captions) == len(set(captions)) == 1296
    train, test = {s.caption for s in synth.scenes("train")}, {s.caption for s in synth.scenes("test")}
    assert not train & test and len(train) + len(test) == 1296
    assert 0.15 < len(test) / 1296 < 0.25
    assert {s.speed for s in synth.scenes("test")} == {"", "slowly", "quickly"}


def test_caption_grammar():
    s = synth.Scene(2, "small", "red", "circle", "left", "white", "slowly")
    assert s.caption == "two small red circles move slowly to the left on a white background"
    assert s.with_motion("still").caption == "two small red circles stay still on a white background"
    assert s.with_motion("still").with_motion("up").caption == "two small red circles move slowly up on a white background"
    assert synth.Scene(1, "large", "blue", "square", "up", "black", "quickly").caption == \
        "a large blue square moves quickly up on a black background"
    assert synth.probes([s]) == {"direction": ["two small red circles move slowly to the right on a white background"],
                                 "speed": ["two small red circles move quickly to the left on a white background"]}
    with pytest.raises(ValueError):
        synth.Scene(1, "large", "blue", "square", "up", "black")  # a moving scene needs a speed


def test_render_is_deterministic_and_moves():
    scene = synth.Scene(1, "large", "red", "square", "right", "black", "quickly")
    a, b = synth.render(scene, seed=3), synth.render(scene, seed=3)
    assert a.shape == (16, 64, 64, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, synth.render(scene, seed=4))
    assert np.array_equal(synth.render(scene, seed=3, only=[9, 2]), a[[9, 2]])  # a sampler's frames alone

    def travel(video):  # columns crossed by the object's centre from first to last frame
        red = video[..., 0].astype(int) - video[..., 2].astype(int) > 100  # (T, H, W) object pixels
        xs = [np.nonzero(frame)[1].mean() for frame in red]
        assert all(np.diff(xs) >= 0)  # moves right, frame after frame
        return xs[-1] - xs[0]

    quick, slow = travel(a), travel(synth.render(dataclasses.replace(scene, speed="slowly"), seed=3))
    assert 34 < quick < 42 and 13 < slow < 19  # 60% and 25% of 64 px


def test_cache_names_follow_the_clip():
    scene = synth.Scene(1, "large", "red", "square", "right", "black", "quickly")
    name = synth.clip_name(scene, 3)
    assert name == synth.clip_name(scene, 3) != synth.clip_name(scene, 4)
    assert name != synth.clip_name(dataclasses.replace(scene, speed="slowly"), 3)


def test_one_frame_cannot_tell_direction_or_speed():
    base = synth.Scene(1, "small", "green", "circle", "left", "gray", "quickly")

    def centroid_x(video):  # (T,) mean column of the object's pixels per frame
        return np.array([np.nonzero(f[..., 1].astype(int) - f[..., 0] > 40)[1].mean() for f in video])

    left = centroid_x(synth.render(base, seed=1))
    right = centroid_x(synth.render(base.with_motion("right"), seed=1))
    slow = centroid_x(synth.render(dataclasses.replace(base, speed="slowly"), seed=1))
    # Mid-clip the object sits in the same place whichever way or speed it moves; only the
    # change from frame to frame differs.
    assert abs(left[8] - right[8]) < 6 and right[-1] - left[-1] > 25 and left[0] - right[0] > 25
    assert abs(left[8] - slow[8]) < 6 and left[0] - slow[0] > 8


def test_written_mp4_decodes_to_the_rendered_frames(tmp_path):
    video = synth.render(synth.Scene(1, "large", "yellow", "triangle", "down", "white", "slowly"), seed=0)
    path = synth.write_mp4(tmp_path / "clip.mp4", video)
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (16, 64, 64)
    decoded = np.stack(read_frames(path, range(16)))
    assert np.abs(decoded.astype(int) - video).mean() < 4  # crf 18 H.264 on 4:2:0 chroma
