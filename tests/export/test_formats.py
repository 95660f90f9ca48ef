"""Every supported checkpoint format, written in its real key layout, exports to a bundle whose
embeddings equal the reference model's (cos >= 0.99999)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from checkpoint_writers import (
    TINY,
    TINY_C4C,
    hf_reference_features,
    write_clip4clip,
    write_drl,
    write_hf_dir,
    write_open_clip,
    write_open_clip_dir,
    write_openai_state_dict,
    write_openai_torchscript,
    write_xclip,
)

from vlrt import Runtime
from vlrt.export import export_checkpoint, load_checkpoint
from vlrt.models import HeadConfig, ModelConfig, TextConfig, VideoTextModel, VisionConfig, random_init
from vlrt.models.checkpoint import save_checkpoint


def write_vlrt(path):
    cfg = ModelConfig(embed_dim=48, vision=VisionConfig(32, 8, 128, 2, 2), text=TextConfig(77, 49408, 64, 2, 1),
                      head=HeadConfig(type="seqTransf", layers=1, heads=1, max_positions=16))
    return save_checkpoint(random_init(VideoTextModel(cfg), seed=3), path, settings={"max_frames": 6, "max_words": 20})


# case -> (writer, expected format, family, head, activation source)
CASES = {
    "openai-torchscript": (lambda d: write_openai_torchscript(d / "ViT-tiny.pt", TINY, seed=1), "openai", "clip", "meanP", "format"),
    "openai-state-dict": (lambda d: write_openai_state_dict(d / "tiny.pt", TINY, seed=1), "openai", "clip", "meanP", "format"),
    "openai-model-state-dict": (lambda d: write_openai_state_dict(d / "ft.pt", TINY, seed=1, extra_keys=False), "openai", "clip", "meanP", "signature"),
    "open_clip-wrapper": (lambda d: write_open_clip(d / "epoch_3.pt", TINY, seed=1), "open_clip", "clip", "meanP", "flag"),
    "open_clip-ddp": (lambda d: write_open_clip(d / "ddp.pt", TINY, seed=1, module_prefix=True), "open_clip", "clip", "meanP", "flag"),
    "open_clip-safetensors": (lambda d: write_open_clip(d / "m.safetensors", TINY, seed=1, wrapper=False, safetensors=True), "open_clip", "clip", "meanP", "flag"),
    "open_clip-hub-dir": (lambda d: write_open_clip_dir(d / "oc", TINY, seed=1), "open_clip", "clip", "meanP", "config"),
    "hf-safetensors": (lambda d: write_hf_dir(d / "hf", TINY, seed=1), "hf", "clip", "meanP", "config"),
    "hf-bin-gelu": (lambda d: write_hf_dir(d / "hf", TINY, seed=1, hidden_act="gelu", safetensors=False), "hf", "clip", "meanP", "config"),
    "clip4clip-meanP": (lambda d: write_clip4clip(d / "pytorch_model.bin.0", TINY_C4C, seed=1, head="meanP"), "clip4clip", "clip4clip", "meanP", "format"),
    "clip4clip-seqTransf": (lambda d: write_clip4clip(d / "pytorch_model.bin.1", TINY_C4C, seed=1, head="seqTransf"), "clip4clip", "clip4clip", "seqTransf", "format"),
    "clip4clip-seqLSTM": (lambda d: write_clip4clip(d / "pytorch_model.bin.2", TINY_C4C, seed=1, head="seqLSTM"), "clip4clip", "clip4clip", "seqLSTM", "format"),
    "xclip-seqTransf": (lambda d: write_xclip(d / "pytorch_model.bin.3", TINY_C4C, seed=1, head="seqTransf", max_words=16, max_frames=6), "xclip", "xclip", "seqTransf", "format"),
    "xclip-meanP": (lambda d: write_xclip(d / "pytorch_model.bin.4", TINY, seed=1, head="meanP"), "xclip", "xclip", "meanP", "format"),
    "drl-wti2-seqTransf": (lambda d: write_drl(d / "pytorch_model.bin.5", TINY_C4C, seed=1, head="seqTransf", wti_arch=2), "drl", "drl", "seqTransf", "format"),
    "drl-wti1-meanP": (lambda d: write_drl(d / "pytorch_model.bin.6", TINY_C4C, seed=1, head="meanP", wti_arch=1, fp16=False), "drl", "drl", "meanP", "format"),
    "vlrt": (lambda d: write_vlrt(d / "model.pt"), "vlrt", "clip4clip", "seqTransf", "config"),
    "vlrt-gzip": (lambda d: write_vlrt(d / "model.pt.gz"), "vlrt", "clip4clip", "seqTransf", "config"),
}


def reference(ckpt, pixels, mask, ids):
    with torch.no_grad():
        video, _ = ckpt.model.encode_video(torch.from_numpy(pixels), torch.from_numpy(mask))
        text, _ = ckpt.model.encode_text(torch.from_numpy(ids))
    return video.numpy(), text.numpy()


def min_cos(a, b):
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_matches_reference(case, tmp_path):
    writer, fmt, family, head, act_source = CASES[case]
    path = writer(tmp_path)
    activation = "gelu" if act_source == "flag" else None
    result = export_checkpoint(path, tmp_path / "bundle", activation=activation)
    m = result.manifest
    assert (m["source"]["format"], m["family"], m["head"], m["activation_source"]) == (fmt, family, head, act_source)
    assert m["validation"]["passed"] and m["validation"]["min_cosine"] >= 0.99999
    assert {f["name"] for f in m["files"]} >= {"video.onnx", "text.onnx"}

    rt = Runtime.load(tmp_path / "bundle", backend="ort-cpu")
    rng = np.random.default_rng(7)
    size, frames = rt.bundle.image_size, rt.bundle.max_frames
    pixels = rng.standard_normal((3, frames, 3, size, size), dtype=np.float32)
    mask = np.ones((3, frames), np.float32)
    mask[1, 2:] = 0
    texts = ["a dog runs on the beach", "two people are dancing", "cooking"]
    ckpt = load_checkpoint(path, activation=activation)
    want_video, want_text = reference(ckpt, pixels, mask, rt.tokenize(texts))
    assert min_cos(rt.encode_frames(pixels, mask), want_video) >= 0.99999
    assert min_cos(rt.encode_text(texts), want_text) >= 0.99999


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_hf_reference_equals_transformers(hidden_act, tmp_path):
    """An independent oracle: Hugging Face's own CLIPModel on the same directory."""
    path = write_hf_dir(tmp_path / "hf", TINY, seed=2, hidden_act=hidden_act)
    ckpt = load_checkpoint(path)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, TINY.image_size, TINY.image_size, generator=gen)
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 0, 0],
                        [49406, 2368, 49407, 0, 0, 0, 0, 0, 0]])
    want_image, want_text = hf_reference_features(path, pixels, ids)
    with torch.no_grad():
        # One frame under meanP is normalize(frame embedding): the image embedding.
        video, _ = ckpt.model.encode_video(pixels[:, None], torch.ones(2, 1))
        text, _ = ckpt.model.encode_text(ids)
    assert min_cos(video.numpy(), want_image.numpy()) >= 0.99999
    assert min_cos(text.numpy(), want_text.numpy()) >= 0.99999


def test_torchscript_and_state_dict_give_identical_models(tmp_path):
    a = load_checkpoint(write_openai_torchscript(tmp_path / "a.pt", TINY, seed=4))
    b = load_checkpoint(write_openai_state_dict(tmp_path / "b.pt", TINY, seed=4))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_open_clip_activation_guess_warns_and_is_recorded(tmp_path):
    """No config, no flag, no OpenAI dtype split: QuickGELU, the activation of the OpenAI weights
    that video-retrieval checkpoints start from, is guessed, with a warning."""
    path = write_open_clip(tmp_path / "epoch_1.pt", TINY, seed=1)
    ckpt = load_checkpoint(path)
    assert ckpt.activation_source == "guess" and ckpt.config.activation == "quick_gelu"
    assert any("GUESSING" in w and "--activation gelu" in w for w in ckpt.warnings)


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_open_clip_config_states_the_activation_and_normalisation(quick_gelu, tmp_path):
    """open_clip_config.json beside the weights (a hub directory, or a file next to it) decides
    GELU vs QuickGELU, with no guess and no warning; its mean/std reach the manifest."""
    path = write_open_clip_dir(tmp_path / "oc", TINY, seed=1, quick_gelu=quick_gelu, safetensors=False)
    want = "quick_gelu" if quick_gelu else "gelu"
    for source in (path, path / "open_clip_pytorch_model.bin"):
        ckpt = load_checkpoint(source)
        assert (ckpt.config.activation, ckpt.activation_source, ckpt.warnings) == (want, "config", [])
    (path / "config.json").write_text("{}")  # a hub upload's other config, without CLIPModel weights
    assert load_checkpoint(path).format == "open_clip"
    result = export_checkpoint(path, tmp_path / "bundle")
    assert result.manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert result.manifest["preprocessing"]["std"] == [0.5, 0.5, 0.5]


def test_activation_changes_embeddings(tmp_path):
    """Why the guess matters: GELU and QuickGELU give different embeddings for the same weights."""
    path = write_open_clip(tmp_path / "epoch_1.pt", TINY, seed=1)
    ids = torch.tensor([[49406, 320, 2368, 49407]])
    with torch.no_grad():
        gelu = load_checkpoint(path, activation="gelu").model.encode_text(ids)[0]
        quick = load_checkpoint(path, activation="quick_gelu").model.encode_text(ids)[0]
    assert float((gelu * quick).sum()) < 0.99999


@pytest.mark.parametrize("head", ["seqTransf", "seqLSTM"])
def test_padded_frames_do_not_change_embeddings(head, tmp_path):
    path = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=5, head=head)
    export_checkpoint(path, tmp_path / "bundle", max_frames=6)
    rt = Runtime.load(tmp_path / "bundle")
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((2, 6, 3, 32, 32), dtype=np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.float32)
    other = pixels.copy()
    other[0, 3:] = 10 * rng.standard_normal((3, 3, 32, 32))
    other[1, 1:] = 0
    v1, f1 = rt.encode_frames(pixels, mask, return_frames=True)
    v2, f2 = rt.encode_frames(other, mask, return_frames=True)
    assert np.abs(v1 - v2).max() <= 1e-6 and np.abs(f1 - f2).max() <= 1e-6
    assert np.all(f1[0, 3:] == 0) and np.all(f1[1, 1:] == 0)
    # and the valid frames do matter
    changed = pixels.copy()
    changed[0, 0] += 1.0
    assert np.abs(rt.encode_frames(changed, mask) - v1)[0].max() > 1e-4
