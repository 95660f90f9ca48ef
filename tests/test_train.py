"""The embedded model's training recipe: reproducible, train captions only, a checkpoint the exporter reads."""
import numpy as np
import torch

from vlrt.bench import synth
from vlrt.export import export_checkpoint
from vlrt.models import train
from vlrt.models.checkpoint import save_checkpoint


def test_same_seed_same_weights():
    a, history = train.train(steps=2, batch=8, lr=5e-4, seed=3, bf16=False, log_every=1)
    b, _ = train.train(steps=2, batch=8, lr=5e-4, seed=3, bf16=False, log_every=1)
    c, _ = train.train(steps=2, batch=8, lr=5e-4, seed=4, bf16=False, log_every=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert [h["step"] for h in history] == [0, 1] and all(np.isfinite(h["loss"]) for h in history)


def twin_kinds(speed_twins: float) -> dict[str, int]:
    train_scenes = synth.scenes("train")
    names = {s.caption for s in train_scenes}
    rng = np.random.default_rng(0)
    twins = {"direction": 0, "speed": 0, "still": 0}
    for _ in range(30):
        items = train.sample_batch(train_scenes, rng, 16, speed_twins)
        assert all(scene.caption in names for scene, _ in items)  # no test caption leaks in
        for (scene, _), (twin, _) in zip(items[::2], items[1::2]):
            assert (twin.count, twin.size, twin.colour, twin.shape, twin.background) == \
                (scene.count, scene.size, scene.colour, scene.shape, scene.background)
            if scene.motion == "still":
                twins["still"] += 1  # a still scene's twin moves: neither speed nor direction
            else:
                twins["speed" if twin.motion == scene.motion and twin.speed != scene.speed else "direction"] += 1
    return twins


def test_batches_hold_train_captions_and_their_twins():
    twins = twin_kinds(0.5)
    assert min(twins["direction"], twins["speed"]) > 60  # both kinds of twin, about half each


def test_the_share_of_speed_twins_is_a_setting():
    assert twin_kinds(0.0)["speed"] == 0
    few, many = twin_kinds(0.25), twin_kinds(1.0)
    assert 0 < few["speed"] < few["direction"] and many["speed"] > 4 * many["direction"]


def test_checkpoint_exports_with_the_recipe_settings(tmp_path):
    model, _ = train.train(steps=1, batch=4, lr=5e-4, seed=0, bf16=False)
    path = save_checkpoint(model, tmp_path / "m.pt.gz", family="clip4clip", settings=train.SETTINGS, half=True)
    m = export_checkpoint(path, tmp_path / "bundle").manifest
    assert (m["source"]["format"], m["family"], m["head"]) == ("vlrt", "clip4clip", "seqTransf")
    assert (m["max_frames"], m["max_words"], m["sampling"]["rule"]) == (8, 20, "segment_middle")
    assert m["validation"]["passed"]


def test_twin_negatives_are_unshown_training_captions_that_differ_in_time_only():
    train_scenes = synth.scenes("train")
    names = {s.caption for s in train_scenes}
    items = train.sample_batch(train_scenes, np.random.default_rng(1), 16)
    shown = {scene.caption for scene, _ in items}
    extra = train.twin_negatives(items, names)
    assert extra and len(extra) == len(set(extra)) and not set(extra) & shown and set(extra) <= names
    by_objects = {(s.count, s.size, s.colour, s.shape, s.background) for s, _ in items if s.motion != "still"}
    scenes = {s.caption: s for s in train_scenes}
    assert all((scenes[c].count, scenes[c].size, scenes[c].colour, scenes[c].shape, scenes[c].background) in by_objects
               for c in extra)


def test_extra_negatives_enter_the_video_to_text_loss_only():
    torch.manual_seed(0)
    model = train.random_init(train.VideoTextModel(train.model_config()), seed=0)
    items = train.sample_batch(synth.scenes("train"), np.random.default_rng(0), 4)
    captions = [s.caption for s, _ in items]
    tok = train.ClipTokenizer()
    pixels = train.to_pixels(train.render_batch(items))
    ids = torch.from_numpy(tok(captions, context_length=train.WORDS))
    negatives = torch.from_numpy(tok(["a large yellow square stays still on a black background"],
                                     context_length=train.WORDS))
    with torch.no_grad():
        plain = train.clip_loss(model, pixels, ids, captions)
        harder = train.clip_loss(model, pixels, ids, captions, negatives)
    assert harder > plain  # one more wrong answer in every video's softmax
