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


def test_batches_hold_train_captions_and_their_twins():
    train_scenes = synth.scenes("train")
    names = {s.caption for s in train_scenes}
    rng = np.random.default_rng(0)
    twins = {"direction": 0, "speed": 0}
    for _ in range(30):
        items = train.sample_batch(train_scenes, rng, 16)
        assert all(scene.caption in names for scene, _ in items)  # no test caption leaks in
        for (scene, _), (twin, _) in zip(items[::2], items[1::2]):
            assert (twin.count, twin.size, twin.colour, twin.shape, twin.background) == \
                (scene.count, scene.size, scene.colour, scene.shape, scene.background)
            twins["speed" if twin.motion == scene.motion and twin.speed != scene.speed else "direction"] += 1
    assert min(twins.values()) > 60  # both kinds of twin, about half each


def test_checkpoint_exports_with_the_recipe_settings(tmp_path):
    model, _ = train.train(steps=1, batch=4, lr=5e-4, seed=0, bf16=False)
    path = save_checkpoint(model, tmp_path / "m.pt.gz", family="clip4clip", settings=train.SETTINGS, half=True)
    m = export_checkpoint(path, tmp_path / "bundle").manifest
    assert (m["source"]["format"], m["family"], m["head"]) == ("vlrt", "clip4clip", "seqTransf")
    assert (m["max_frames"], m["max_words"], m["sampling"]["rule"]) == (8, 20, "segment_middle")
    assert m["validation"]["passed"]
