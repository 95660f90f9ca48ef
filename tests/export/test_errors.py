"""Bad checkpoints give one clear error naming the file and the reason."""
import json

import numpy as np
import pytest
import torch
from checkpoint_writers import (
    TINY,
    TINY_C4C,
    openai_state_dict,
    write_clip4clip,
    write_open_clip,
    write_open_clip_dir,
)

from vlrt.errors import VlrtError
from vlrt.export import load_checkpoint


def test_missing_file(tmp_path):
    with pytest.raises(VlrtError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(VlrtError, match="empty file"):
        load_checkpoint(tmp_path / "empty.pt")


def test_random_bytes(tmp_path):
    # Garbage makes torch's unpickler fail with whatever error the bytes lead to (a CI run once hit
    # an IndexError); 300 fixed seeds cover many opcodes, and every one must give a VlrtError.
    path = tmp_path / "noise.bin"
    for seed in range(300):
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(VlrtError, match=str(path)):
            load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    full = write_open_clip(tmp_path / f"full{suffix}", TINY, seed=0, wrapper=False, safetensors=suffix == ".safetensors")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VlrtError, match="truncated or corrupt"):
        load_checkpoint(cut, activation="gelu")


def test_unknown_layout_lists_supported_formats(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(VlrtError, match="unknown checkpoint layout") as err:
        load_checkpoint(path)
    for name in ("vlrt:", "clip4clip:", "hf:", "openai:", "open_clip:"):
        assert name in str(err.value)


def test_inconsistent_shapes(tmp_path):
    sd = openai_state_dict(TINY, seed=0)
    sd["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(5, TINY.text_width)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(VlrtError, match="inconsistent shapes.*resblocks.0.attn.in_proj_weight"):
        load_checkpoint(path)


class Opaque:
    """A class pickled by reference: only full unpickling can rebuild it."""


def test_untrusted_pickle_needs_the_flag(tmp_path):
    sd = openai_state_dict(TINY, seed=0)
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": sd, "args": Opaque()}, path)
    with pytest.raises(VlrtError, match="--trust-pickle"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust_pickle=True).format == "openai"


def test_tight_transf_is_refused(tmp_path):
    path = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="meanP")
    sd = torch.load(path, weights_only=True)
    sd["cross.embeddings.weight"] = torch.zeros(2, 2)
    torch.save(sd, path)
    with pytest.raises(VlrtError, match="tightTransf"):
        load_checkpoint(path)


def test_frames_beyond_head_positions_are_refused(tmp_path):
    path = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf", max_position_embeddings=8)
    with pytest.raises(VlrtError, match="--frames 9 is outside 1..8"):
        load_checkpoint(path, max_frames=9)


def test_words_beyond_context_are_refused(tmp_path):
    path = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="meanP")
    with pytest.raises(VlrtError, match="--words 78 is outside 3..77"):
        load_checkpoint(path, max_words=78)


@pytest.mark.parametrize("vision_cfg, message", [
    ({"head_width": 48}, "vision_cfg.head_width 48 does not divide the vision width 128"),
    ({"head_width": 0}, "vision_cfg.head_width is 0, not a positive integer"),
])
def test_open_clip_config_heads_must_fit(vision_cfg, message, tmp_path):
    path = write_open_clip_dir(tmp_path / "oc", TINY, seed=0)
    config = json.loads((path / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"].update(vision_cfg)
    (path / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(VlrtError, match=f"{path}.*open_clip_config.json: {message}"):
        load_checkpoint(path)
