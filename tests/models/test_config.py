import pytest

from vlrt.errors import VlrtError
from vlrt.models import HeadConfig, ModelConfig, get_config, list_configs


def test_bundled_configs_are_listed_and_load():
    assert list_configs() == ["ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-L-14-336"]
    cfg = get_config("ViT-L-14-336")
    assert (cfg.embed_dim, cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.heads) == (768, 336, 14, 16)


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(VlrtError, match="ViT-B-32"):
        get_config("ViT-H-14")


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
