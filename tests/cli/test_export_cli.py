"""`vlrt export` through the real entry point."""
import argparse
import json

import pytest
import torch
from checkpoint_writers import TINY, TINY_C4C, openai_state_dict, write_clip4clip, write_open_clip
from cli_support import vlrt


def test_export_prints_validation_report(tmp_path):
    ckpt = write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    res = vlrt("export", ckpt, "-o", tmp_path / "b", "--frames", 4, "--words", 20)
    assert res.returncode == 0, res.stderr
    assert "clip4clip checkpoint, family clip4clip, head seqTransf" in res.stdout
    assert "parity vs PyTorch fp32 (onnxruntime-cpu-fp32): PASS" in res.stdout
    for name in ("video_embeds", "frame_embeds", "text_embeds", "token_embeds"):
        assert name in res.stdout
    assert res.stderr == ""  # stage progress is shown on terminals only
    assert (tmp_path / "b" / "vlrt.json").is_file()


def test_export_json(tmp_path):
    ckpt = write_open_clip(tmp_path / "epoch_2.pt", TINY, seed=0)
    res = vlrt("export", ckpt, "-o", tmp_path / "b", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["format"] == "open_clip" and out["validation"]["passed"]
    assert any("GUESSING" in w for w in out["warnings"])
    assert "GUESSING 'quick_gelu'" in res.stderr


def _garbage(d):
    (d / "x.pt").write_bytes(b"\x80\x02garbage")
    return d / "x.pt"


def _unknown_layout(d):
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, d / "resnet.pt")
    return d / "resnet.pt"


def _truncated(d):
    full = write_open_clip(d / "full.pt", TINY, seed=0, wrapper=False)
    (d / "cut.pt").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return d / "cut.pt"


def _misshapen(d):
    sd = openai_state_dict(TINY, seed=0)
    sd["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(5, TINY.text_width)
    torch.save(sd, d / "bad.pt")
    return d / "bad.pt"


def _pickled_object(d):
    torch.save({"state_dict": openai_state_dict(TINY, seed=0), "args": argparse.Namespace(lr=1)}, d / "obj.pt")
    return d / "obj.pt"


@pytest.mark.parametrize("setup, reason", [
    (lambda d: d / "missing.pt", "no such file"),
    (_garbage, "not a checkpoint this tool reads"),
    (_unknown_layout, "unknown checkpoint layout"),
    (_truncated, "truncated or corrupt"),
    (_misshapen, "inconsistent shapes"),
    (_pickled_object, "pass --trust-pickle"),
], ids=["missing", "garbage", "unknown", "truncated", "misshapen", "pickle"])
def test_errors_are_one_line_without_traceback(tmp_path, setup, reason):
    path = setup(tmp_path)
    res = vlrt("export", path, "-o", tmp_path / "b", "--activation", "gelu")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vlrt: error: {path}:") and reason in lines[0], lines
    assert "Traceback" not in res.stderr and not (tmp_path / "b").exists()
    if reason == "unknown checkpoint layout":  # the error lists what is supported
        assert all(f"{name}:" in lines[0] for name in ("vlrt", "clip4clip", "hf", "openai", "open_clip"))


def test_help_is_the_module_docstring():
    res = vlrt("export", "--help")
    assert res.returncode == 0 and "parity-checked bundle" in res.stdout and "--trust-pickle" in res.stdout
