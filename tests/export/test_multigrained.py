"""X-CLIP and DRL bundles end to end: the scorer graph's gate, the runtime's scores against the
reference model (packed and unpacked, zero-padded frames as the models' loaders pad them), the
fixed word and frame counts, and search through an index."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from checkpoint_writers import TINY_C4C, write_clip4clip, write_drl, write_xclip
from video_assets import write_video

from vlrt import Runtime
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint, load_checkpoint
from vlrt.export import onnx as onnx_module
from vlrt.runtime.index import Index

TEXTS = ["a dog runs on the beach", "two people are dancing on a stage", "cooking"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("multigrained")
    paths = {"xclip": write_xclip(root / "pytorch_model.bin.0", TINY_C4C, seed=2, max_words=16, max_frames=6),
             "drl": write_drl(root / "pytorch_model.bin.1", TINY_C4C, seed=2, wti_arch=2)}
    for name, path in paths.items():
        export_checkpoint(path, root / name)
    return root, paths


def reference_scores(ckpt, rt, pixels, mask):
    with torch.no_grad():
        video = ckpt.model.video_outputs(torch.from_numpy(pixels), torch.from_numpy(mask))
        text = ckpt.model.text_outputs(torch.from_numpy(rt.tokenize(TEXTS)))
        feeds = {k: text[k] for k in rt.scorer["text_inputs"]} | {k: video[k] for k in rt.scorer["video_inputs"]}
        return ckpt.model.scorer(**feeds).numpy()


@pytest.mark.parametrize("family", ["xclip", "drl"])
def test_manifest_records_the_scorer_and_its_gate(models, family):
    root, _ = models
    m = Runtime.load(root / family, backend="ort-cpu").bundle.manifest
    assert m["family"] == family and m["embedding"] == "multi-vector"
    assert m["validation"]["passed"] and m["validation"]["scores"]["max_abs_diff"] <= 1e-4
    assert m["validation"]["scores"]["pairs"] >= 12
    assert m["scorer"]["file"] in {f["name"] for f in m["files"]}
    if family == "xclip":  # its weight matrices fix words and frames
        assert (m["max_words"], m["max_frames"], m["scorer"]["words"], m["scorer"]["frames"]) == (16, 6, 16, 6)
        assert m["padded_frames"] == "zero-image"


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("family", ["xclip", "drl"])
def test_runtime_scores_equal_the_reference(models, family, pack):
    root, paths = models
    rt = Runtime.load(root / family, backend="ort-cpu", pack=pack)
    assert rt.packed == pack and rt.multi_vector
    frames, size = rt.bundle.max_frames, rt.bundle.image_size
    rng = np.random.default_rng(3)
    pixels = rng.standard_normal((3, frames, 3, size, size), dtype=np.float32)
    mask = np.ones((3, frames), np.float32)
    mask[1, 2:] = 0
    mask[2, 1:] = 0
    pixels[mask == 0] = 0  # the models' data loaders leave padded frames as zero pixels
    video, record = rt.encode_frames(pixels, mask, return_frames=True)
    assert record.shape == (3, frames, rt.embed_dim + (family == "drl"))
    got = rt.score(rt.encode_text_outputs(TEXTS), {"video_embeds": video, **rt.split_frame_record(record)})
    want = reference_scores(load_checkpoint(paths[family]), rt, pixels, mask)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - want).max() <= 1e-4


def test_xclip_words_and_frames_come_from_its_shapes(models, tmp_path):
    _, paths = models
    with pytest.raises(VlrtError, match="--words 20: this checkpoint's scorer takes exactly 16 words"):
        load_checkpoint(paths["xclip"], max_words=20)
    with pytest.raises(VlrtError, match="--frames 12: this checkpoint's scorer takes exactly 6 frames"):
        load_checkpoint(paths["xclip"], max_frames=12)
    assert load_checkpoint(paths["xclip"], max_words=16).max_words == 16


def test_drl_family_on_a_checkpoint_without_weight_mlps_is_ti(tmp_path):
    """DRL's "ti" and "dp" runs save CLIP4Clip's layout; --family drl scores it token-wise."""
    path = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=1, head="meanP")
    ckpt = load_checkpoint(path, family="drl")
    assert ckpt.config.scorer.type == "drl" and ckpt.config.scorer.weight_layers == 0
    assert load_checkpoint(path).family.name == "clip4clip"


def test_gate_catches_a_drifting_scorer(models, tmp_path, monkeypatch):
    _, paths = models
    real = onnx_module._Graph.forward

    def drifted(self, *inputs):
        out = real(self, *inputs)
        return (out[0] + 1e-3,) if self.name == "scorer" else out

    monkeypatch.setattr(onnx_module._Graph, "forward", drifted)
    with pytest.raises(VlrtError, match=r"parity gate.*scores +max \|diff\| 1\.00e-03"):
        export_checkpoint(paths["drl"], tmp_path / "out")


@pytest.mark.parametrize("family", ["xclip", "drl"])
def test_index_search_uses_the_scorer(models, tmp_path, family):
    root, _ = models
    videos = []
    for i in range(5):
        videos.append(str(tmp_path / f"v{i}.mp4"))
        write_video(tmp_path / f"v{i}.mp4", frames=8 + 10 * i, width=64 + 16 * i)
    with Index.create(tmp_path / "index", root / family) as index:
        assert index.add(videos).embedded == 5
    index = Index.open(tmp_path / "index")
    rt = index.runtime()
    exact = rt.score(rt.encode_text_outputs([TEXTS[0]]),
                     {"video_embeds": index.embeddings, **rt.split_frame_record(index.frame_records)})[0]
    hits = index.search(TEXTS[0], k=5)
    order = np.argsort(-exact, kind="stable")
    assert [p for p, _ in hits] == [index.rows[i]["path"] for i in order]
    np.testing.assert_allclose([s for _, s in hits], exact[order], atol=1e-6)
    deep = index.search(TEXTS[0], k=5, rerank=5)  # a full first stage: the exact order
    assert [p for p, _ in deep] == [p for p, _ in hits]
    # the scorer sees the rows in the first stage's order: the same scores up to float rounding
    np.testing.assert_allclose([s for _, s in deep], [s for _, s in hits], rtol=0, atol=1e-6)
    shallow = [p for p, _ in index.search(TEXTS[0], k=2, rerank=3)]
    first = [p for p, _ in index.search(rt.encode_text([TEXTS[0]])[0], k=3)]  # a vector: dot product only
    assert len(shallow) == 2 and set(shallow) <= set(first)
    assert index.frames.shape == (5, rt.bundle.max_frames, rt.embed_dim)  # frame selection reads embeddings only
    assert len(index.search(TEXTS[0], k=3, frames=2)) == 3


def test_auto_gates_a_multi_grained_model_on_its_scorers_recall(models, tmp_path):
    from vlrt.bench.metrics import recall_report
    from vlrt.build.auto import build_auto
    from vlrt.runtime.pipeline import ClipLoader, stack_clips

    root, _ = models
    bundle = shutil.copytree(root / "drl", tmp_path / "drl")
    videos = []
    for i in range(3):
        videos.append(str(tmp_path / f"v{i}.mp4"))
        write_video(tmp_path / f"v{i}.mp4", frames=12 + 12 * i, width=64 + 16 * i)
    captions = ["a red circle", "a blue square", "two green stars"]
    entry = build_auto(bundle, gallery=(videos, captions), rounds=1, only=["ort-cpu"], threads=1)
    fp32 = next(c for c in entry["candidates"] if c["name"] == "ort-cpu fp32")
    rt = Runtime.load(bundle, backend="ort-cpu")
    pixels, mask = stack_clips([ClipLoader(rt.bundle.manifest)(v) for v in videos])
    video, record = rt.encode_frames(pixels, mask, return_frames=True)
    want = recall_report(rt.score(rt.encode_text_outputs(captions), {"video_embeds": video, **rt.split_frame_record(record)}))
    assert fp32["recall"] == {k: want[k] for k in ("t2v_R@1", "v2t_R@1")}
