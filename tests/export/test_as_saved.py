"""Checkpoints as people save them: OpenAI's CLIP saved with torch.save(model.state_dict()),
open_clip layouts without a config, and geometries beyond CLIP's (MLP not 4 x width, heads from
a config). The oracle is Hugging Face's CLIPModel, loaded with weights that this file maps from
the OpenAI-layout state dict itself, so vlrt's own loaders play no part in it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from checkpoint_writers import (
    OPENAI_EXTRA_KEYS,
    TINY,
    Geometry,
    hf_config_kwargs,
    hf_model_features,
    hf_reference_features,
    open_clip_state_dict,
    openai_shapes,
    openai_state_dict,
    write_hf_dir,
    write_open_clip,
    write_open_clip_dir,
)

from vlrt import Runtime
from vlrt.export import export_checkpoint, load_checkpoint
from vlrt.export.formats import OpenClipFormat
from vlrt.export.infer import check_shapes, infer_config
from vlrt.export.load import with_mlp_widths
from vlrt.export.read import RawCheckpoint
from vlrt.models import get_config

TEXTS = ["a dog runs on the beach", "two people are dancing", "cooking"]
# A ViT-g-14-like tower at toy size: MLP 280 = 4.375 x width 64 (ViT-g-14: 6144 = 4.36 x 1408).
VIT_G_TINY = Geometry(embed_dim=32, vision_width=64, vision_mlp=280, text_width=64)
# The same with heads stated by a config: head_width 32 -> 2 vision heads, 4 text heads (not
# width // 64 = 1), and a text MLP of 3 x width.
VIT_G_TINY_HEADS = Geometry(embed_dim=32, vision_width=64, vision_mlp=280, vision_head_width=32,
                            text_width=64, text_mlp=192, text_head_width=16)

# OpenAI CLIP names -> Hugging Face CLIPModel names, applied in order.
HF_NAMES = (
    (r"^visual\.class_embedding$", "vision_model.embeddings.class_embedding"),
    (r"^visual\.conv1\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual\.positional_embedding$", "vision_model.embeddings.position_embedding.weight"),
    (r"^visual\.ln_pre\.", "vision_model.pre_layrnorm."),
    (r"^visual\.ln_post\.", "vision_model.post_layernorm."),
    (r"^visual\.transformer\.resblocks\.", "vision_model.encoder.layers."),
    (r"^token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^transformer\.resblocks\.", "text_model.encoder.layers."),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"\.attn\.", ".self_attn."),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
)


def sharpen(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The writers' 0.02-scale weights keep MLP inputs near 0, where GELU and QuickGELU agree to
    ~1e-6 in cosine, and attention near uniform, where the head count hardly matters; 10x larger
    MLP and q/k/v weights make either mistake show (dtypes kept)."""
    scaled = (".mlp.c_fc.weight", ".mlp.c_proj.weight", ".attn.in_proj_weight")
    return {k: (v.float() * 10).to(v.dtype) if k.endswith(scaled) else v for k, v in sd.items()}


def openai_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenAI-layout state dict in Hugging Face's names, fp32: q/k/v split, projections transposed."""
    out = {}
    for key, value in sd.items():
        if key in OPENAI_EXTRA_KEYS:
            continue
        value = value.float()
        if key in ("visual.proj", "text_projection"):  # (W, E) parameter -> Linear weight (E, W)
            out["visual_projection.weight" if key == "visual.proj" else "text_projection.weight"] = value.t()
            continue
        for pattern, repl in HF_NAMES:
            key = re.sub(pattern, repl, key)
        packed = re.match(r"(.*)\.self_attn\.in_proj_(weight|bias)$", key)
        if packed:
            for part, chunk in zip("qkv", value.chunk(3)):
                out[f"{packed.group(1)}.self_attn.{part}_proj.{packed.group(2)}"] = chunk
            continue
        out[key] = value
    return out


def hf_oracle(sd: dict[str, torch.Tensor], geom: Geometry, hidden_act: str):
    from transformers import CLIPConfig, CLIPModel

    model = CLIPModel(CLIPConfig(**hf_config_kwargs(geom, hidden_act=hidden_act)))
    missing, unexpected = model.load_state_dict(openai_to_hf(sd), strict=False)
    assert unexpected == [] and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    return model.eval()


def min_cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def bundle_vs(bundle, oracle) -> tuple[float, float]:
    """Min cosine of the exported bundle's (video, text) embeddings against `oracle(pixels, ids)`."""
    rt = Runtime.load(bundle, backend="ort-cpu")
    size = rt.bundle.image_size
    pixels = np.random.default_rng(5).standard_normal((3, 1, 3, size, size), dtype=np.float32)
    ids = rt.tokenize(TEXTS)
    image, text = oracle(torch.from_numpy(pixels[:, 0]), torch.from_numpy(ids))
    # One frame under meanP is normalize(image embedding).
    return min_cos(rt.encode_frames(pixels), image.numpy()), min_cos(rt.encode_text(TEXTS), text.numpy())


def from_model(model):
    return lambda pixels, ids: hf_model_features(model, pixels, ids)


def test_saved_openai_state_dict_is_openai_with_no_flag(tmp_path):
    """torch.save(model.state_dict()) of a model from clip.load: no extras, OpenAI's dtype split."""
    sd = sharpen(openai_state_dict(TINY, seed=11, extra_keys=False))
    assert not set(OPENAI_EXTRA_KEYS) & set(sd)
    assert (sd["visual.conv1.weight"].dtype, sd["transformer.resblocks.0.mlp.c_fc.weight"].dtype) == (torch.float16,) * 2
    assert (sd["visual.ln_pre.weight"].dtype, sd["token_embedding.weight"].dtype) == (torch.float32,) * 2
    torch.save(sd, tmp_path / "clip_finetuned.pt")
    m = export_checkpoint(tmp_path / "clip_finetuned.pt", tmp_path / "bundle").manifest
    assert (m["source"]["format"], m["activation"], m["activation_source"], m["warnings"]) == (
        "openai", "quick_gelu", "signature", [])
    assert m["validation"]["passed"] and m["validation"]["min_cosine"] >= 0.99999
    video, text = bundle_vs(tmp_path / "bundle", from_model(hf_oracle(sd, TINY, "quick_gelu")))
    print(f"openai state dict vs HF quick_gelu: video {video:.7f}, text {text:.7f}")
    assert video >= 0.99999 and text >= 0.99999
    # The oracle tells the activations apart: against the same weights under GELU (the old
    # reading of this file) both embeddings miss the 0.99999 the export is held to.
    video, text = bundle_vs(tmp_path / "bundle", from_model(hf_oracle(sd, TINY, "gelu")))
    print(f"openai state dict vs HF gelu: video {video:.7f}, text {text:.7f}")
    assert max(video, text) < 0.99999


def _all_fp32(d):
    torch.save(open_clip_state_dict(TINY, seed=1), d / "oc.pt")
    return d / "oc.pt"


def _all_fp16(d):
    torch.save({k: v.half() for k, v in openai_state_dict(TINY, seed=1, extra_keys=False).items()}, d / "half.pt")
    return d / "half.pt"


def _split_beside_open_clip_config(d):
    path = write_open_clip_dir(d / "oc", TINY, seed=1, quick_gelu=False, safetensors=False)
    weights = path / "open_clip_pytorch_model.bin"
    torch.save(openai_state_dict(TINY, seed=1, extra_keys=False), weights)
    return weights


@pytest.mark.parametrize("writer, want", [
    (_all_fp32, ("open_clip", "quick_gelu", "guess")),  # fp32 / AMP training saves all fp32
    (_all_fp16, ("open_clip", "quick_gelu", "guess")),  # model.half(): no split, no signature
    (_split_beside_open_clip_config, ("open_clip", "gelu", "config")),  # a config outranks dtypes
])
def test_signature_is_the_exact_openai_split(writer, want, tmp_path):
    ckpt = load_checkpoint(writer(tmp_path))
    assert (ckpt.format, ckpt.config.activation, ckpt.activation_source) == want
    assert bool(ckpt.warnings) == (want[2] == "guess")


def test_open_clip_layout_guesses_quick_gelu_and_the_flag_overrides(tmp_path):
    path = write_open_clip(tmp_path / "epoch_1.pt", TINY, seed=1)
    ckpt = load_checkpoint(path)
    assert (ckpt.format, ckpt.config.activation, ckpt.activation_source) == ("open_clip", "quick_gelu", "guess")
    assert any("GUESSING 'quick_gelu'" in w and "--activation gelu" in w for w in ckpt.warnings)
    flagged = load_checkpoint(path, activation="gelu")
    assert (flagged.config.activation, flagged.activation_source, flagged.warnings) == ("gelu", "flag", [])
    # and the signature's reading yields to the flag too, with a warning saying so
    torch.save(openai_state_dict(TINY, seed=1, extra_keys=False), tmp_path / "sd.pt")
    over = load_checkpoint(tmp_path / "sd.pt", activation="gelu")
    assert (over.format, over.config.activation, over.activation_source) == ("openai", "gelu", "flag")
    assert over.warnings == ["--activation gelu overrides quick_gelu, which the signature states"]


def _vit_g_openai(d):
    sd = sharpen(openai_state_dict(VIT_G_TINY, seed=3, extra_keys=False))
    torch.save(sd, d / "vit_g.pt")
    return d / "vit_g.pt", VIT_G_TINY, from_model(hf_oracle(sd, VIT_G_TINY, "quick_gelu"))


def _vit_g_open_clip_dir(d):
    path, sd = _sharp_open_clip_dir(d)
    return path, VIT_G_TINY_HEADS, from_model(hf_oracle(sd, VIT_G_TINY_HEADS, "quick_gelu"))


def _vit_g_hf_dir(d):
    path = write_hf_dir(d / "hf", VIT_G_TINY_HEADS, seed=3, hidden_act="gelu")
    return path, VIT_G_TINY_HEADS, lambda pixels, ids: hf_reference_features(path, pixels, ids)


@pytest.mark.parametrize("writer, fmt", [(_vit_g_openai, "openai"), (_vit_g_open_clip_dir, "open_clip"),
                                         (_vit_g_hf_dir, "hf")])
def test_mlp_width_and_heads_beyond_clip_defaults(writer, fmt, tmp_path):
    path, geom, oracle = writer(tmp_path)
    m = export_checkpoint(path, tmp_path / "bundle").manifest
    assert m["source"]["format"] == fmt and m["validation"]["passed"]
    vision, text = m["model"]["vision"], m["model"]["text"]
    assert (vision["mlp_width"], vision["heads"], text["mlp_width"], text["heads"]) == (
        geom.vision_hidden, geom.vision_heads, geom.text_hidden, geom.text_heads)
    video_cos, text_cos = bundle_vs(tmp_path / "bundle", oracle)
    print(f"{fmt} mlp {geom.vision_hidden}/{geom.text_hidden}, heads {geom.vision_heads}/{geom.text_heads}: "
          f"video {video_cos:.7f}, text {text_cos:.7f}")
    assert video_cos >= 0.99999 and text_cos >= 0.99999


def _sharp_open_clip_dir(d):
    path = write_open_clip_dir(d / "oc", VIT_G_TINY_HEADS, seed=3, quick_gelu=True, safetensors=False)
    sd = sharpen(open_clip_state_dict(VIT_G_TINY_HEADS, seed=3))
    torch.save(sd, path / "open_clip_pytorch_model.bin")
    return path, sd


def test_heads_from_open_clip_config_matter(tmp_path):
    """With width // 64 heads instead of the config's, the same weights give other embeddings."""
    path, sd = _sharp_open_clip_dir(tmp_path)
    ckpt = load_checkpoint(path)
    assert (ckpt.config.vision.heads, ckpt.config.text.heads) == (2, 4)
    wrong = Geometry(**{**VIT_G_TINY_HEADS.__dict__, "vision_head_width": 64, "text_head_width": 64})
    export_checkpoint(path, tmp_path / "bundle")
    video, text = bundle_vs(tmp_path / "bundle", from_model(hf_oracle(sd, wrong, "quick_gelu")))
    print(f"config heads vs width // 64 heads: video {video:.7f}, text {text:.7f}")
    assert min(video, text) < 0.9999


# open_clip's model configs, as its hub uploads carry them in open_clip_config.json.
OPEN_CLIP_CONFIGS = {
    "ViT-H-14": {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 12}},
    "ViT-g-14": {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 40, "width": 1408, "head_width": 88, "mlp_ratio": 4.3637, "patch_size": 14},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 12}},
    "ViT-bigG-14": {"embed_dim": 1280, "vision_cfg": {"image_size": 224, "layers": 48, "width": 1664, "head_width": 104, "mlp_ratio": 4.9231, "patch_size": 14},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20, "layers": 32}},
}


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_CONFIGS))
def test_full_size_open_clip_geometry_from_shapes_and_config(name, tmp_path):
    """Meta tensors (no weights allocated) in open_clip's layout for the real model: heads come
    from open_clip_config.json, MLP widths from shapes, and the result is the bundled config."""
    cfg = OPEN_CLIP_CONFIGS[name]
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    geom = Geometry(embed_dim=cfg["embed_dim"], image_size=224, patch_size=14, vision_width=v["width"],
                    vision_layers=v["layers"], text_width=t["width"], text_layers=t["layers"],
                    vision_mlp=int(v["width"] * v.get("mlp_ratio", 4.0)))
    sd = {k: torch.empty(s, device="meta") for k, s in openai_shapes(geom).items()}
    raw = RawCheckpoint(tmp_path / "open_clip_model.safetensors", "safetensors", sd,
                        open_clip_config=json.loads(json.dumps({"model_cfg": cfg})))
    conv = OpenClipFormat().convert(raw, sd)
    model_cfg = with_mlp_widths(infer_config(conv.state_dict, activation=conv.activation, vision_heads=conv.vision_heads,
                                             text_heads=conv.text_heads), conv.state_dict)
    assert model_cfg == get_config(name)
    check_shapes(model_cfg, conv.state_dict)
