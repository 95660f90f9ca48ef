"""`vlrt export` through the real entry point."""
import json
import subprocess
import sys

import pytest
from checkpoint_writers import TINY, TINY_C4C, write_clip4clip, write_open_clip


def vlrt(*args):
    return subprocess.run([sys.executable, "-m", "vlrt", *map(str, args)], capture_output=True, text=True)


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
    assert "GUESSING 'gelu'" in res.stderr


@pytest.mark.parametrize("setup, reason", [
    (lambda d: d / "missing.pt", "no such file"),
    (lambda d: (d / "x.pt").write_bytes(b"\x80\x02garbage") and d / "x.pt", "x.pt"),
])
def test_errors_are_one_line_without_traceback(tmp_path, setup, reason):
    res = vlrt("export", setup(tmp_path), "-o", tmp_path / "b")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlrt: error:") and reason in lines[0]
    assert "Traceback" not in res.stderr and not (tmp_path / "b").exists()


def test_help_is_the_module_docstring():
    res = vlrt("export", "--help")
    assert res.returncode == 0 and "parity-checked bundle" in res.stdout and "--trust-pickle" in res.stdout
