import pytest

from vlrt.errors import VlrtError
from vlrt.models import (
    HeadConfig,
    ModelConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_configs,
)


def test_bundled_configs_are_listed_and_load():
    assert list_configs() == ["ViT-B-16", "ViT-B-32", "ViT-H-14", "ViT-L-14", "ViT-L-14-336", "ViT-bigG-14", "ViT-g-14"]
    cfg = get_config("ViT-L-14-336")
    assert (cfg.embed_dim, cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.heads) == (768, 336, 14, 16)
    assert (cfg.vision.mlp_width, cfg.text.mlp_width) == (4096, 3072)  # unstated: 4 x width


@pytest.mark.parametrize("name, vision, text", [
    # open_clip: heads = width // head_width (80, 88, 104), mlp = int(width * mlp_ratio)
    ("ViT-H-14", (1280, 16, 5120), (1024, 16, 4096)),
    ("ViT-g-14", (1408, 16, 6144), (1024, 16, 4096)),
    ("ViT-bigG-14", (1664, 16, 8192), (1280, 20, 5120)),
])
def test_open_clip_giants_state_heads_and_mlp_widths(name, vision, text):
    cfg = get_config(name)
    assert (cfg.vision.width, cfg.vision.heads, cfg.vision.mlp_width) == vision
    assert (cfg.text.width, cfg.text.heads, cfg.text.mlp_width) == text


def test_mlp_width_defaults_to_four_times_width_and_is_recorded():
    assert VisionConfig(32, 8, 64, 2, 1).mlp_width == 256
    assert TextConfig(77, 49408, 64, 2, 1, mlp_width=280).mlp_width == 280
    cfg = get_config("ViT-g-14")
    assert cfg.to_dict()["vision"]["mlp_width"] == 6144
    assert get_config("ViT-B-32").to_dict()["text"]["mlp_width"] == 2048


@pytest.mark.parametrize("mlp_width", [0, -4, 2.5])
def test_bad_mlp_width_is_refused(mlp_width):
    with pytest.raises(VlrtError, match="MLP width"):
        VisionConfig(32, 8, 64, 2, 1, mlp_width=mlp_width)


def test_unknown_config_keys_are_refused():
    data = get_config("ViT-B-32").to_dict()
    data["vision"]["mlp_ratio"] = 4.0
    with pytest.raises(VlrtError, match="malformed model config.*mlp_ratio"):
        ModelConfig.from_dict(data)


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(VlrtError, match="ViT-B-32"):
        get_config("ViT-e-14")


def test_config_round_trips_through_dict():
    cfg = get_config("ViT-B-32").replace(head=HeadConfig(type="seqTransf", layers=4, heads=8, max_positions=128))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("change, message", [
    ({"activation": "relu"}, "unknown activation"),
    ({"head": HeadConfig(type="tightTransf")}, "unknown temporal head"),
])
def test_config_refuses_bad_values(change, message):
    with pytest.raises(VlrtError, match=message):
        get_config("ViT-B-32").replace(**change)


def test_malformed_config_dict_is_a_clear_error():
    with pytest.raises(VlrtError, match="malformed model config"):
        ModelConfig.from_dict({"embed_dim": 512})
