"""Sanity tests of tests/checkpoint_writers.py (the fixtures vlrt's loaders are tested against)."""

from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict
from pathlib import Path

import checkpoint_writers as cw
import pytest
import torch
from torch import nn

# --------------------------------------------------------------------------------------------
# An independent mirror of OpenAI CLIP's *parameter structure* built from torch's own modules
# (nn.MultiheadAttention, nn.Conv2d(bias=False), nn.Embedding, ...), so key names, order and
# shapes come from torch rather than from the writer's tables. No forward is needed.
# --------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // 64)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", nn.GELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[_Block(width) for _ in range(layers)])


class _Visual(nn.Module):
    def __init__(self, g: cw.Geometry):
        super().__init__()
        w = g.vision_width
        self.conv1 = nn.Conv2d(3, w, kernel_size=g.patch_size, stride=g.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(g.num_positions, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = _Transformer(w, g.vision_layers)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, g.embed_dim))


class _CLIP(nn.Module):
    def __init__(self, g: cw.Geometry):
        super().__init__()
        self.visual = _Visual(g)
        self.transformer = _Transformer(g.text_width, g.text_layers)
        self.token_embedding = nn.Embedding(g.vocab_size, g.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(g.context_length, g.text_width))
        self.ln_final = nn.LayerNorm(g.text_width)
        self.text_projection = nn.Parameter(torch.empty(g.text_width, g.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))


def _convert_like_openai(model: nn.Module) -> None:
    """The module-type rule of OpenAI's convert_weights (behaviour, restated for the test)."""

    def f(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.data = m.weight.data.half()
            if m.bias is not None:
                m.bias.data = m.bias.data.half()
        if isinstance(m, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):
                t = getattr(m, attr)
                if t is not None:
                    t.data = t.data.half()
        for name in ("text_projection", "proj"):
            t = getattr(m, name, None)
            if isinstance(t, torch.Tensor):
                t.data = t.data.half()

    model.apply(f)


def _assert_sd_equal(a: dict, b: dict, *, order: bool = True) -> None:
    if order:
        assert list(a) == list(b)
    else:
        assert set(a) == set(b)
    for k, expected in b.items():
        assert a[k].dtype == expected.dtype, k
        assert a[k].shape == expected.shape, k
        assert torch.equal(a[k], expected), k


# --------------------------------------------------------------------------------------------
# OpenAI layout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "geom, expected",
    [
        (cw.VIT_B_32, 151_277_313),
        (cw.VIT_B_16, 149_620_737),
        (cw.VIT_L_14, 427_616_513),
        (cw.VIT_L_14_336, 427_944_193),
    ],
)
def test_published_parameter_counts(geom, expected):
    n = cw.count_parameters(cw.openai_shapes(geom))
    assert abs(n - expected) <= 0.001 * expected
    assert n == expected


@pytest.mark.parametrize("geom", [cw.TINY, cw.VIT_B_32, cw.VIT_L_14_336])
def test_openai_shapes_match_torch_module_tree(geom):
    with torch.device("meta"):
        ref = _CLIP(geom)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = cw.openai_shapes(geom)
    assert list(ours.items()) == list(ref_shapes.items())
    assert sum(p.numel() for p in ref.parameters()) == cw.count_parameters(ours)


def test_openai_state_dict_dtypes_follow_convert_weights():
    ref = _CLIP(cw.TINY)
    _convert_like_openai(ref)
    ref_dtypes = {k: v.dtype for k, v in ref.state_dict().items()}
    sd = cw.openai_state_dict(cw.TINY, 0)
    assert {k: v.dtype for k, v in sd.items() if k not in cw.OPENAI_EXTRA_KEYS} == ref_dtypes
    # spot checks of the split
    assert sd["visual.conv1.weight"].dtype == torch.float16
    assert sd["visual.transformer.resblocks.0.attn.out_proj.bias"].dtype == torch.float16
    assert sd["text_projection"].dtype == torch.float16
    assert sd["visual.proj"].dtype == torch.float16
    for k in ("token_embedding.weight", "positional_embedding", "visual.positional_embedding",
              "visual.class_embedding", "ln_final.weight", "visual.ln_pre.bias", "logit_scale"):
        assert sd[k].dtype == torch.float32, k


def test_openai_state_dict_contents():
    g = cw.TINY
    sd = cw.openai_state_dict(g, 0)
    assert list(sd)[:6] == ["positional_embedding", "text_projection", "logit_scale",
                            "input_resolution", "context_length", "vocab_size"]
    for key, value in (("input_resolution", g.image_size), ("context_length", g.context_length),
                       ("vocab_size", g.vocab_size)):
        assert sd[key].dtype == torch.int64 and sd[key].ndim == 0 and int(sd[key]) == value
    assert sd["logit_scale"].item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    ln_w = sd["visual.transformer.resblocks.1.ln_2.weight"]
    ln_b = sd["visual.transformer.resblocks.1.ln_2.bias"]
    assert not torch.all(ln_w == 1) and (ln_w - 1).abs().max() <= 0.1
    assert not torch.all(ln_b == 0)
    assert sd["transformer.resblocks.0.mlp.c_fc.bias"].abs().sum() > 0

    # deterministic in seed; fp16=False keeps the same values unrounded
    again = cw.openai_state_dict(g, 0)
    _assert_sd_equal(again, sd)
    other = cw.openai_state_dict(g, 1)
    assert not torch.equal(other["visual.proj"], sd["visual.proj"])
    full = cw.openai_state_dict(g, 0, fp16=False, extra_keys=False)
    assert all(v.dtype == torch.float32 for v in full.values())
    assert set(full) == set(sd) - set(cw.OPENAI_EXTRA_KEYS)
    for k, v in full.items():
        assert torch.equal(v.to(sd[k].dtype), sd[k]), k


def test_torchscript_archive_roundtrip(tmp_path):
    path = cw.write_openai_torchscript(tmp_path / "ViT-tiny.pt", cw.TINY, 7)
    assert path == tmp_path / "ViT-tiny.pt" and path.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.* is deprecated in 2.x
        module = torch.jit.load(str(path), map_location="cpu")
    assert isinstance(module, torch.jit.ScriptModule)
    _assert_sd_equal(module.state_dict(), cw.openai_state_dict(cw.TINY, 7))
    # A real TorchScript zip, not a pickled dict: torch.load(weights_only=True) refuses it
    # (with weights_only=False it would dispatch to torch.jit.load).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="TorchScript"):
            torch.load(path, map_location="cpu", weights_only=True)


def test_openai_plain_state_dict_file(tmp_path):
    path = cw.write_openai_state_dict(tmp_path / "ViT-tiny-sd.pt", cw.TINY, 3)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    _assert_sd_equal(loaded, cw.openai_state_dict(cw.TINY, 3))


# --------------------------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, suffix",
    [
        ({}, ".pt"),
        ({"module_prefix": True}, ".pt"),
        ({"wrapper": False}, ".bin"),
        ({"scaler": True}, ".pt"),
        ({"safetensors": True}, ".safetensors"),
        ({"safetensors": True, "module_prefix": True}, ".safetensors"),
    ],
)
def test_open_clip_variants(tmp_path, kwargs, suffix):
    path = cw.write_open_clip(tmp_path / f"epoch_3{suffix}", cw.TINY, 2, **kwargs)
    wrapper = kwargs.get("wrapper", True) and not kwargs.get("safetensors", False)
    if kwargs.get("safetensors"):
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if wrapper:
        assert obj["epoch"] == 3 and obj["name"] == "tiny"
        assert {"state", "param_groups"} <= set(obj["optimizer"])
        assert ("scaler" in obj) == kwargs.get("scaler", False)
        sd = obj["state_dict"]
    else:
        sd = obj
    expected = cw.open_clip_state_dict(cw.TINY, 2)
    if kwargs.get("module_prefix"):
        assert all(k.startswith("module.") for k in sd)
        sd = {k[len("module."):]: v for k, v in sd.items()}
    _assert_sd_equal(sd, expected, order=not kwargs.get("safetensors"))
    assert set(sd) == set(cw.openai_shapes(cw.TINY))
    assert not set(cw.OPENAI_EXTRA_KEYS) & set(sd)
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_open_clip_values_and_block_order():
    oc = cw.open_clip_state_dict(cw.TINY, 4)
    oa = cw.openai_state_dict(cw.TINY, 4, fp16=False, extra_keys=False)
    _assert_sd_equal(oc, oa, order=False)
    block = [k for k in oc if k.startswith("visual.transformer.resblocks.0.")]
    assert [k.split(".")[4] for k in block] == (["ln_1"] * 2 + ["attn"] * 4 + ["ln_2"] * 2
                                                + ["mlp"] * 4)


# --------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return cw.write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-clip", cw.TINY, 0)


def _hf_inputs(n: int = 3):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(n, 3, cw.TINY.image_size, cw.TINY.image_size, generator=g)
    ids = torch.zeros(n, cw.TINY.context_length, dtype=torch.int64)
    for i, length in enumerate((4, 9, cw.TINY.context_length - 2)[:n]):
        ids[i, 0] = 49406
        ids[i, 1:length + 1] = torch.randint(1, 49000, (length,), generator=g)
        ids[i, length + 1] = 49407
    return pixels, ids


def test_hf_dir_files_and_config(hf_dir):
    assert (hf_dir / "config.json").is_file()
    assert (hf_dir / "model.safetensors").is_file()
    cfg = json.loads((hf_dir / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    assert cfg["projection_dim"] == cw.TINY.embed_dim
    # mirrors openai/clip-vit-base-patch32's config.json (legacy ids -> argmax pooling)
    assert (text["bos_token_id"], text["eos_token_id"], text["pad_token_id"]) == (0, 2, 1)
    assert text["hidden_act"] == vision["hidden_act"] == "quick_gelu"
    assert text["num_attention_heads"] == vision["num_attention_heads"] == 2
    assert text["max_position_embeddings"] == 77 and text["vocab_size"] == 49408
    assert vision["image_size"] == 32 and vision["patch_size"] == 8
    assert vision["intermediate_size"] == 4 * cw.TINY.vision_width

    from safetensors import safe_open

    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        pre_ln = f.get_tensor("vision_model.pre_layrnorm.weight")  # sic: HF's real key name
        q_bias = f.get_tensor("vision_model.encoder.layers.0.self_attn.q_proj.bias")
        assert f.get_tensor("visual_projection.weight").shape == (cw.TINY.embed_dim,
                                                                   cw.TINY.vision_width)
    assert {"logit_scale", "text_projection.weight", "visual_projection.weight",
            "vision_model.embeddings.class_embedding",
            "vision_model.embeddings.patch_embedding.weight",
            "text_model.final_layer_norm.weight"} <= keys
    assert not torch.all(pre_ln == 1) and (pre_ln - 1).abs().max() <= 0.1
    assert q_bias.abs().sum() > 0


def test_hf_reference_features(hf_dir):
    pixels, ids = _hf_inputs()
    image, text = cw.hf_reference_features(hf_dir, pixels, ids)
    assert image.shape == (3, cw.TINY.embed_dim) and text.shape == (3, cw.TINY.embed_dim)
    assert image.dtype == text.dtype == torch.float32
    assert torch.isfinite(image).all() and torch.isfinite(text).all()
    # unnormalized, and the text feature depends on where the EOT token is
    assert not torch.allclose(image.norm(dim=-1), torch.ones(3))
    ids2 = ids.clone()
    ids2[0, 3:] = 0
    ids2[0, 3] = 49407
    _, text2 = cw.hf_reference_features(hf_dir, pixels, ids2)
    assert not torch.allclose(text2[0], text[0]) and torch.allclose(text2[1:], text[1:])


def test_hf_dir_bin_and_modern_ids(tmp_path, hf_dir):
    pixels, ids = _hf_inputs(2)
    ref = cw.hf_reference_features(hf_dir, pixels, ids)
    bin_dir = cw.write_hf_dir(tmp_path / "bin", cw.TINY, 0, safetensors=False,
                              legacy_token_ids=False)
    assert (bin_dir / "pytorch_model.bin").is_file()
    assert not (bin_dir / "model.safetensors").exists()
    assert json.loads((bin_dir / "config.json").read_text())["text_config"]["eos_token_id"] == 49407
    got = cw.hf_reference_features(bin_dir, pixels, ids)
    # same seed -> same weights; with one EOT per row both pooling rules pick the same token
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


# --------------------------------------------------------------------------------------------
# CLIP4Clip
# --------------------------------------------------------------------------------------------


def _transformer_clip_reference(width: int, layers: int) -> dict[str, tuple[int, ...]]:
    return {f"transformerClip.{k}": tuple(v.shape)
            for k, v in _Transformer(width, layers).state_dict().items()}


@pytest.mark.parametrize("head", ["meanP", "seqTransf", "seqLSTM"])
def test_clip4clip_layout(tmp_path, head):
    g = cw.TINY
    path = cw.write_clip4clip(tmp_path / "pytorch_model.bin.0", g, 5, head=head, cross_layers=2)
    assert path.name == "pytorch_model.bin.0"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(sd, dict)
    _assert_sd_equal(sd, cw.clip4clip_state_dict(g, 5, head=head, cross_layers=2))

    clip_keys = [k for k in sd if k.startswith("clip.")]
    head_keys = [k for k in sd if not k.startswith("clip.")]
    assert list(sd)[: len(clip_keys)] == clip_keys  # clip first, heads after
    openai = cw.openai_state_dict(g, 5, extra_keys=False)
    _assert_sd_equal({k[len("clip."):]: sd[k] for k in clip_keys}, openai)  # mixed fp16/fp32

    expected: dict[str, tuple[int, ...]] = {}
    if head in ("seqTransf", "seqLSTM"):
        expected["frame_position_embeddings.weight"] = (g.context_length, g.text_width)
    if head == "seqTransf":
        expected.update(_transformer_clip_reference(g.text_width, 2))
    if head == "seqLSTM":
        lstm = nn.LSTM(input_size=g.text_width, hidden_size=g.text_width, batch_first=True,
                       bidirectional=False, num_layers=1)
        expected.update({f"lstm_visual.{k}": tuple(v.shape) for k, v in lstm.state_dict().items()})
    assert [(k, tuple(sd[k].shape)) for k in head_keys] == list(expected.items())
    assert all(sd[k].dtype == torch.float32 for k in head_keys)
    assert not any(k.startswith(("cross.", "similarity_dense", "clip.input_resolution"))
                   for k in sd)


def test_clip4clip_options(tmp_path):
    g = cw.TINY
    sd = cw.clip4clip_state_dict(g, 0, head="seqTransf", cross_layers=4,
                                 max_position_embeddings=128, fp16=False, linear_patch="3d")
    assert sd["frame_position_embeddings.weight"].shape == (128, g.text_width)
    assert len({k.split(".")[2] for k in sd if k.startswith("transformerClip.")}) == 4
    assert all(v.dtype == torch.float32 for v in sd.values())
    conv2 = sd["clip.visual.conv2.weight"]
    assert conv2.shape == (g.vision_width, 3, 3, g.patch_size, g.patch_size)
    keys = list(sd)
    assert keys.index("clip.visual.conv2.weight") == keys.index("clip.visual.ln_post.bias") + 1
    # conv2 does not shift the other values
    base = cw.clip4clip_state_dict(g, 0, head="seqTransf", cross_layers=4,
                                   max_position_embeddings=128, fp16=False)
    _assert_sd_equal({k: v for k, v in sd.items() if k != "clip.visual.conv2.weight"}, base)
    assert cw.clip4clip_state_dict(g, 0, head="meanP", linear_patch="3d")[
        "clip.visual.conv2.weight"].dtype == torch.float16
    # a directory gets pytorch_model.bin.0 inside it
    assert cw.write_clip4clip(tmp_path, g, 0, head="meanP") == tmp_path / "pytorch_model.bin.0"
    with pytest.raises(ValueError):
        cw.clip4clip_state_dict(g, 0, head="tightTransf")  # type: ignore[arg-type]


def test_writers_are_independent_of_vlrt():
    import ast

    tree = ast.parse(Path(cw.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "vlrt" not in imported


def test_tiny_c4c_geometry_can_run_seq_heads():
    # seq heads act on embed_dim-wide frame features but are built text_width wide
    g = cw.TINY_C4C
    assert g.embed_dim == g.text_width and g.image_size == cw.TINY.image_size
    sd = cw.clip4clip_state_dict(g, 0, head="seqLSTM")
    assert sd["lstm_visual.weight_ih_l0"].shape == (4 * g.embed_dim, g.embed_dim)
