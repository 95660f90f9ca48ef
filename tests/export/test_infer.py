"""Hyperparameters from shape-only state dicts: meta tensors, no weights allocated."""
import pytest
import torch
from checkpoint_writers import TINY, VIT_B_16, VIT_B_32, VIT_L_14, VIT_L_14_336, openai_shapes

from vlrt.errors import VlrtError
from vlrt.export.formats import openai_to_canonical
from vlrt.export.infer import check_shapes, infer_config
from vlrt.models import get_config


def meta_state_dict(geom):
    return openai_to_canonical({k: torch.empty(s, device="meta") for k, s in openai_shapes(geom).items()})


@pytest.mark.parametrize("name, geom", [("ViT-B-32", VIT_B_32), ("ViT-B-16", VIT_B_16),
                                        ("ViT-L-14", VIT_L_14), ("ViT-L-14-336", VIT_L_14_336)])
def test_infers_published_geometries(name, geom):
    shapes = meta_state_dict(geom)
    cfg = infer_config(shapes)
    assert cfg == get_config(name)
    check_shapes(cfg, shapes)  # every tensor accounted for, none misshapen


def test_inconsistent_projection_dims_are_refused():
    shapes = meta_state_dict(TINY)
    shapes["clip.text.text_projection"] = torch.empty(TINY.text_width, TINY.embed_dim + 1, device="meta")
    with pytest.raises(VlrtError, match="inconsistent shapes: vision projects to 32 dims, text to 33"):
        infer_config(shapes)


def test_misshapen_block_is_named():
    shapes = meta_state_dict(TINY)
    key = "clip.visual.transformer.resblocks.1.mlp.c_fc.weight"
    shapes[key] = torch.empty(7, TINY.vision_width, device="meta")
    with pytest.raises(VlrtError, match=r"misshapen: clip\.visual\.transformer\.resblocks\.1\.mlp\.c_fc\.weight \(7, 128\)"):
        check_shapes(infer_config(shapes), shapes)


def test_missing_and_unexpected_keys_are_named():
    shapes = meta_state_dict(TINY)
    del shapes["clip.visual.ln_post.bias"]
    shapes["clip.visual.extra"] = torch.empty(1, device="meta")
    with pytest.raises(VlrtError, match=r"missing: clip\.visual\.ln_post\.bias; unexpected: clip\.visual\.extra"):
        check_shapes(infer_config(shapes), shapes)


def test_gap_in_block_numbering_is_refused():
    shapes = meta_state_dict(TINY)
    for key in [k for k in shapes if ".resblocks.0." in k and "visual" in k]:
        shapes[key.replace(".resblocks.0.", ".resblocks.5.")] = shapes.pop(key)
    with pytest.raises(VlrtError, match="not numbered"):
        infer_config(shapes)
