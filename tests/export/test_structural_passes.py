"""Structural build passes: attention fusion (counted, not assumed) and token merging (checked
against the NumPy definition), alone, chained, and through `vlrt build` / `Runtime.load`."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip

from vlrt import Runtime
from vlrt.build.engine import build_engine
from vlrt.build.passes import DynamicInt8, FuseAttention, TokenMerge
from vlrt.build.passes.tome import vision_tokens
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.ops.token_merge import merge_tokens
from vlrt.runtime.bundle import Bundle

VISION_LAYERS = TINY_C4C.vision_layers
TEXT_LAYERS = TINY_C4C.text_layers
HEAD_LAYERS = 2  # write_clip4clip's seqTransf head


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("structural")
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=1, head="seqTransf")
    return export_checkpoint(ckpt, root / "b", max_frames=4).bundle


def ops(path):
    return collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onnx.load(str(path)).graph.node)


def run(path, feeds, outputs=None):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(outputs, feeds)


def video_feeds(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, 4), np.float32)
    mask[-1, 2:] = 0
    return {"pixels": rng.standard_normal((batch, 4, 3, 32, 32), dtype=np.float32), "frame_mask": mask}


TEXT_FEEDS = {"input_ids": np.array([[49406, 320, 1125, 539, 49407, 0, 0, 0],
                                     [49406, 400, 49407, 0, 0, 0, 0, 0],
                                     [49406, 5, 6, 7, 8, 9, 10, 49407]], np.int64)}


def test_fusion_counts_and_equal_outputs(bundle, tmp_path):
    for graph, feeds, fused, unfused in [("video", video_feeds(), VISION_LAYERS, HEAD_LAYERS),
                                         ("text", TEXT_FEEDS, TEXT_LAYERS, 0)]:
        out = tmp_path / f"{graph}.onnx"
        report = FuseAttention().apply(bundle / f"{graph}.onnx", out)
        assert report.changed == {"Attention": fused, "attention left unfused": unfused}
        counts = ops(out)
        assert counts["com.microsoft:Attention"] == fused
        assert counts["ai.onnx:Softmax"] == unfused  # only the seqTransf head's masked attention is left
        onnx.checker.check_model(onnx.load(str(out)))
        for want, got in zip(run(bundle / f"{graph}.onnx", feeds), run(out, feeds)):
            np.testing.assert_allclose(got, want, atol=2e-5)


def test_onnxruntime_keeps_the_fused_nodes(bundle, tmp_path):
    """ORT's own session optimizer must not undo or split the fused op (and finds none by itself)."""
    for graph, layers in [("video", VISION_LAYERS), ("text", TEXT_LAYERS)]:
        fused = tmp_path / f"{graph}.onnx"
        FuseAttention().apply(bundle / f"{graph}.onnx", fused)
        for src, expected in [(bundle / f"{graph}.onnx", 0), (fused, layers)]:
            opts = ort.SessionOptions()
            opts.optimized_model_filepath = str(tmp_path / f"{graph}-session.onnx")
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
            assert ops(tmp_path / f"{graph}-session.onnx")["com.microsoft:Attention"] == expected


def test_dynamic_int8_quantizes_the_fused_attention(bundle, tmp_path):
    FuseAttention().apply(bundle / "video.onnx", tmp_path / "fused.onnx")
    report = DynamicInt8().apply(tmp_path / "fused.onnx", tmp_path / "int8.onnx")
    assert report.changed["QAttention"] == VISION_LAYERS
    assert ops(tmp_path / "int8.onnx")["com.microsoft:Attention"] == 0


def merged_tensors(bundle, tmp_path, r):
    """Run the token-merged graph and return, per block, its input and merged tensors."""
    path = tmp_path / f"tome{r}.onnx"
    report = TokenMerge(r=r, tokens=vision_tokens(Bundle.open(bundle).manifest)).apply(bundle / "video.onnx", path)
    model = onnx.load(str(path))
    names = []
    for k in range(VISION_LAYERS):
        names += [f"/visual/transformer/resblocks.{k}/Add_output_0", f"/vlrt_tome/block{k}/x_merged",
                  f"/vlrt_tome/block{k}/size_merged"]
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    onnx.save(model, str(tmp_path / "debug.onnx"))
    values = run(tmp_path / "debug.onnx", video_feeds(batch=3), ["video_embeds", *names])
    return report, dict(zip(["video_embeds", *names], values))


def test_token_merge_graph_equals_the_reference(bundle, tmp_path):
    tokens = vision_tokens(Bundle.open(bundle).manifest)
    report, got = merged_tensors(bundle, tmp_path, r=3)
    assert report.changed == {"merge steps": VISION_LAYERS, "tokens merged": 3 * VISION_LAYERS,
                              "tokens left": tokens - 3 * VISION_LAYERS}
    size = None
    for k in range(VISION_LAYERS):
        x = got[f"/visual/transformer/resblocks.{k}/Add_output_0"]  # (B*T, n, C): the graph's own input
        size = np.ones(x.shape[:2], np.float32) if size is None else size
        want_x, want_s = merge_tokens(x, size, 3)
        np.testing.assert_allclose(got[f"/vlrt_tome/block{k}/x_merged"], want_x, atol=1e-5)
        np.testing.assert_array_equal(got[f"/vlrt_tome/block{k}/size_merged"][..., 0], want_s)
        size = want_s
    assert size.shape == (12, tokens - 3 * VISION_LAYERS) and (size.sum(1) == tokens).all()


def test_token_merge_zero_changes_nothing(bundle, tmp_path):
    TokenMerge(r=0, tokens=vision_tokens(Bundle.open(bundle).manifest)).apply(bundle / "video.onnx", tmp_path / "r0.onnx")
    feeds = video_feeds()
    for want, got in zip(run(bundle / "video.onnx", feeds), run(tmp_path / "r0.onnx", feeds)):
        np.testing.assert_array_equal(got, want)


def test_token_merge_then_fusion_carries_proportional_attention(bundle, tmp_path):
    TokenMerge(r=2, tokens=vision_tokens(Bundle.open(bundle).manifest)).apply(bundle / "video.onnx", tmp_path / "tome.onnx")
    report = FuseAttention().apply(tmp_path / "tome.onnx", tmp_path / "both.onnx")
    assert report.changed["Attention"] == VISION_LAYERS
    attention = [n for n in onnx.load(str(tmp_path / "both.onnx")).graph.node if n.op_type == "Attention"]
    # block 0 sees unit sizes (no bias); every later block gets the log-size key bias (6th input)
    assert [len(n.input) for n in attention] == [3] + [6] * (VISION_LAYERS - 1)
    for batch in (1, 3):  # dynamic batch
        feeds = video_feeds(batch=batch)
        for want, got in zip(run(tmp_path / "tome.onnx", feeds), run(tmp_path / "both.onnx", feeds)):
            np.testing.assert_allclose(got, want, atol=2e-5)


def test_build_and_load_token_merged_engines(bundle):
    plain = build_engine(bundle, backend="ort-cpu", precision="int8")
    merged = build_engine(bundle, backend="ort-cpu", precision="int8", token_merge=2, fuse_attention=True)
    assert merged.key != plain.key and "graph_passes" not in plain.manifest["options"]  # both opt-in
    passes = merged.manifest["options"]["graph_passes"]
    assert [p["name"] for p in passes["video"]] == ["token-merge", "fuse-attention"]
    assert [p["name"] for p in passes["text"]] == ["fuse-attention"]
    assert merged.manifest["graphs"]["video"]["passes"][0]["changed"]["tokens merged"] == 2 * VISION_LAYERS
    # merging is opt-in: a plain load never picks the merged engine, even though it is newer
    assert Runtime.load(bundle, precision="int8").engine.key == plain.key
    assert Runtime.load(bundle, precision="int8", token_merge=2).engine.key == merged.key
    assert Runtime.load(bundle, engine=merged.key).engine.key == merged.key
    with pytest.raises(VlrtError, match="--token-merge 3"):
        Runtime.load(bundle, precision="int8", token_merge=3)


def test_fp32_with_fusion_builds_an_engine(bundle):
    built = build_engine(bundle, backend="ort-cpu", precision="fp32", fuse_attention=True)
    assert built.engine_dir is not None and built.manifest["validation"]["min_cosine"] > 0.99999
    assert built.manifest["graphs"]["video"]["pass"]["changed"]["Attention"] == VISION_LAYERS
    unfused = build_engine(bundle, backend="ort-cpu", precision="fp32")
    assert unfused.engine_dir is None  # nothing left to do: the bundle's own graphs


@pytest.mark.parametrize("kwargs, message", [
    ({"token_merge": -1}, "must be >= 0"),
    ({"backend": "ort-cuda", "fuse_attention": True}, "applies to --backend ort-cpu"),
])
def test_refused_settings(bundle, kwargs, message):
    with pytest.raises(VlrtError, match=message):
        build_engine(bundle, **{"backend": "ort-cpu", **kwargs})
