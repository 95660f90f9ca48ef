"""Bundles: hash-checked on load, written atomically, manifest complete."""
import json

import numpy as np
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip

from vlrt import Runtime
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.export import onnx as onnx_module
from vlrt.export import validate as validate_module
from vlrt.runtime.bundle import Bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    export_checkpoint(ckpt, root / "b", max_frames=4, max_words=16)
    return root / "b"


def test_manifest_records_what_inference_needs(bundle_dir):
    m = json.loads((bundle_dir / "vlrt.json").read_text())
    assert (m["family"], m["head"], m["activation"], m["max_frames"], m["max_words"]) == ("clip4clip", "seqTransf", "quick_gelu", 4, 16)
    assert m["model"]["head"]["layer_norm_eps"] == 1e-12 and m["model"]["head"]["mask_value"] == -1e6
    assert m["preprocessing"]["size"] == 32 and m["preprocessing"]["interpolation"] == "bicubic"
    assert m["sampling"] == {"rule": "fps_timeline", "fps": 1.0, "slice_framepos": 2, "max_frames": 4}
    assert m["tokenizer"]["sha256"] == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    assert m["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-4)
    assert {f["name"] for f in m["files"]} == {"video.onnx", "text.onnx", "bpe_simple_vocab_16e6.txt.gz"}
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    assert {"torch", "onnx", "onnxruntime", "vlrt"} <= set(m["versions"])
    v = m["validation"]
    assert v["min_cosine"] >= 0.99999 and 0 <= v["max_abs_diff"] < 1e-4
    assert set(v["per_output"]) == {"video_embeds", "frame_embeds", "text_embeds", "token_embeds"}


def test_tampered_file_is_refused(bundle_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    with open(copy / "text.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VlrtError, match="text.onnx: sha256 .* does not match"):
        Runtime.load(copy)
    (copy / "text.onnx").unlink()
    with pytest.raises(VlrtError, match="text.onnx listed in vlrt.json is missing"):
        Bundle.open(copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(VlrtError, match="not a vlrt bundle"):
        Runtime.load(tmp_path)


def test_failed_gate_leaves_no_bundle(tmp_path, monkeypatch):
    ckpt = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="meanP")
    real = validate_module.compare

    def worse(expected, actual):  # an exporter bug: the graph drifts from the reference
        return real(expected, actual + 0.05 * np.sign(actual))

    monkeypatch.setattr(validate_module, "compare", worse)
    with pytest.raises(VlrtError, match="parity gate"):
        export_checkpoint(ckpt, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pytorch_model.bin.0"]


def test_gate_catches_a_graph_with_fixed_frames_or_words(tmp_path, monkeypatch):
    """A graph whose frames or words axis is fixed at the traced size fails the gate's short feed."""
    ckpt = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    real = onnx_module._dynamic_axes

    def batch_only(dims):
        return {name: {i: d for i, d in axes.items() if d == "batch"} for name, axes in real(dims).items()}

    monkeypatch.setattr(onnx_module, "_dynamic_axes", batch_only)
    with pytest.raises(VlrtError, match=r"video.onnx fails on inputs of shapes .*'pixels': \(1, 2, 3"):
        export_checkpoint(ckpt, tmp_path / "out", max_frames=4)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(bundle_dir, tmp_path):
    ckpt = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=1, head="meanP")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(VlrtError, match="already exists"):
        export_checkpoint(ckpt, tmp_path / "out")
    with pytest.raises(VlrtError, match="not a vlrt bundle; refusing"):
        export_checkpoint(ckpt, tmp_path / "out", overwrite=True)
    export_checkpoint(ckpt, tmp_path / "b")
    first = json.loads((tmp_path / "b" / "vlrt.json").read_text())["head"]
    export_checkpoint(write_clip4clip(tmp_path / "pytorch_model.bin.1", TINY_C4C, seed=1, head="seqLSTM"),
                      tmp_path / "b", overwrite=True)
    assert (first, Bundle.open(tmp_path / "b").manifest["head"]) == ("meanP", "seqLSTM")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_runtime_checks_inputs(bundle_dir):
    rt = Runtime.load(bundle_dir)
    with pytest.raises(VlrtError, match=r"pixels must have shape \(N, T, 3, 32, 32\)"):
        rt.encode_frames(np.zeros((1, 2, 3, 16, 16), np.float32))
    with pytest.raises(VlrtError, match="prefix mask"):
        rt.encode_frames(np.zeros((1, 3, 3, 32, 32), np.float32), np.array([[1, 0, 1]], np.float32))
    assert rt.encode_frames(np.zeros((0, 4, 3, 32, 32), np.float32)).shape == (0, TINY_C4C.embed_dim)
    out = rt.encode_text(["a", "b", "c"], batch_size=2)
    assert out.shape == (3, TINY_C4C.embed_dim) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def _edited_copy(bundle_dir, tmp_path, edit):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy, ignore=shutil.ignore_patterns("engines"))
    m = json.loads((copy / "vlrt.json").read_text())
    edit(m)
    (copy / "vlrt.json").write_text(json.dumps(m))
    return copy


def test_manifest_schema_and_graph_outputs(bundle_dir, tmp_path):
    m = json.loads((bundle_dir / "vlrt.json").read_text())
    assert (m["schema_version"], m["bundle_version"], m["embedding"]) == ("1.1", 1, "vector")
    assert (m["graphs"]["video"]["embedding"], m["graphs"]["video"]["features"]) == ("video_embeds", "frame_embeds")
    assert Bundle.open(bundle_dir).outputs("text") == ("text_embeds", "token_embeds")

    def newer(m):
        m["schema_version"], m["bundle_version"] = "2.0", 2
    with pytest.raises(VlrtError, match=r"bundle schema 2.0 was written by a newer vlrt; this vlrt reads schema 1.x"):
        Bundle.open(_edited_copy(bundle_dir, tmp_path / "a", newer))

    def schema_1_0(m):  # before graphs named their outputs
        del m["schema_version"], m["embedding"]
        for g in m["graphs"].values():
            del g["embedding"], g["features"]
    old = _edited_copy(bundle_dir, tmp_path / "b", schema_1_0)
    ref = Runtime.load(bundle_dir).encode_text(["a dog runs"])
    assert np.array_equal(Runtime.load(old).encode_text(["a dog runs"]), ref)


def test_runtime_refuses_what_it_cannot_encode(bundle_dir, tmp_path):
    def multi(m):
        m["embedding"] = "multi-vector"
    with pytest.raises(VlrtError, match=r"embeds 'multi-vector' without a scorer graph, which this vlrt cannot score"):
        Runtime.load(_edited_copy(bundle_dir, tmp_path / "a", multi))

    def other_tokenizer(m):
        m["tokenizer"]["type"] = "bert-wordpiece"
    with pytest.raises(VlrtError, match=r"tokenizer 'bert-wordpiece'; this vlrt has the clip-bpe tokenizer only"):
        Runtime.load(_edited_copy(bundle_dir, tmp_path / "b", other_tokenizer))
