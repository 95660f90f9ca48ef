"""A full-size ViT-B/32 OpenAI TorchScript archive (random weights) exports and passes the gate."""
import subprocess
import sys

import pytest
from checkpoint_writers import VIT_B_32, write_openai_torchscript


@pytest.mark.slow
def test_vit_b32_torchscript_export(tmp_path):
    ckpt = write_openai_torchscript(tmp_path / "ViT-B-32.pt", VIT_B_32, seed=0)
    res = subprocess.run([sys.executable, "-m", "vlrt", "export", str(ckpt), "-o", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "openai checkpoint, family clip, head meanP, ViT 768w/12L patch 32 @224px, embed 512" in res.stdout
    assert "PASS" in res.stdout and "time: load" in res.stdout
    assert (tmp_path / "b" / "video.onnx").stat().st_size > 300e6  # ~88 M vision parameters in fp32
