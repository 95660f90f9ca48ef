"""benchmarks/gpu.py refuses to run without CUDA and writes nothing; its decode section runs (on
CPU tensors, nothing written) so that a GPU session does not meet a plumbing bug first. And the
GPU package imports cleanly where there is no CUDA, no torchcodec, or no torch at all."""
import argparse
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def load_bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("vlrt_gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu-x.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "no CUDA device" in proc.stderr and "refusing to run" in proc.stderr
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_decode_section_runs_and_counts_fallbacks(tmp_path):
    """On the CPU every file falls back: the rows that claim NVDEC fail loudly instead of timing
    CPU decoding, and the CPU rows are timed."""
    bench = load_bench()
    args = argparse.Namespace(videos=2, seconds=2, width=160, height=96, fps=10, workers=2, repeats=1,
                              device=torch.device("cpu"))
    paths = bench.make_videos(tmp_path, args)
    settings = bench.settings_for("ViT-B-32")
    rows, extra = bench.decode_rows(paths, settings, args)
    assert [r["name"].split(",")[0] for r in rows] == ["decode-only"] * 2 + ["decode + preprocess"] * 2
    assert all(r["videos_per_s"] > 0 for r in rows[0::2])
    for r in rows[1::2]:
        assert "NVDEC" in r["name"] and "videos_per_s" not in r
        assert r["error"] == "not timed: NVDEC leaves 2 of 2 files to the CPU (device is cpu: NVDEC needs a CUDA device)"
    assert extra == {"sampled_frames": 4, "nvdec_fallbacks": {"device is cpu: NVDEC needs a CUDA device": 2}}
    table = "\n".join(bench._table(rows, "videos"))
    assert "| decode-only, NVDEC (RGB on the GPU) | - | - | failed: not timed: NVDEC leaves 2 of 2" in table
    assert bench.failed_rows({"encoder": [], "decode": rows, "end_to_end": []}) == [rows[1]["name"], rows[3]["name"]]


def test_a_fallback_during_timing_fails_the_nvdec_row(tmp_path, monkeypatch):
    """A file NVDEC refuses only in the timed runs (the untimed pass found none) fails the row."""
    bench = load_bench()
    args = argparse.Namespace(videos=1, seconds=1, width=160, height=96, fps=10, workers=1, repeats=1,
                              device=torch.device("cpu"))
    paths = bench.make_videos(tmp_path, args)
    monkeypatch.setattr(bench, "nvdec_fallbacks", lambda *a: {})
    rows, _ = bench.decode_rows(paths, bench.settings_for("ViT-B-32"), args)
    assert rows[1]["error"].endswith("not decoded on the GPU: device is cpu: NVDEC needs a CUDA device")
    assert rows[3]["error"].endswith("not decoded on the GPU: device is cpu: NVDEC needs a CUDA device")


def test_the_context_flags_are_set_before_the_benchmark_touches_cuda(monkeypatch):
    """main() sets the primary context's flags (stand-in driver) before run() uses CUDA."""
    from cuda_standins import BLOCKING_SYNC, install

    bench, log = load_bench(), []
    install(monkeypatch, log, flags=0)
    monkeypatch.setattr(bench, "require_cuda", lambda: torch)
    monkeypatch.setattr(sys, "argv", ["gpu.py"])

    def run(args):
        log.append(f"run on {args.device}")
        raise KeyboardInterrupt  # stop here: the rest needs a GPU

    monkeypatch.setattr(bench, "run", run)
    with pytest.raises(KeyboardInterrupt):
        bench.main()
    assert log == [f"set flags {BLOCKING_SYNC:#x}", "run on cuda:0"]


def test_result_name_is_the_device_slug():
    assert load_bench().slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked")
    sys.meta_path.insert(0, Block())
""")


def test_gpu_package_imports_without_torchcodec_and_cuda():
    code = BLOCK.format(blocked={"torchcodec", "PyNvVideoCodec", "cupy", "tensorrt"}) + textwrap.dedent("""
        import vlrt.gpu, vlrt.gpu.decode, vlrt.gpu.preprocess, vlrt.gpu.encode, vlrt.gpu.pipeline
        from vlrt.gpu import GpuPipeline, GpuDecoder
        from vlrt.errors import VlrtError
        try:
            GpuDecoder()
        except VlrtError as e:
            assert "no CUDA device" in str(e), e
        else:
            import torch; assert torch.cuda.is_available()
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_without_torch_the_gpu_package_names_what_to_install():
    code = BLOCK.format(blocked={"torch"}) + textwrap.dedent("""
        import vlrt, vlrt.gpu
        from vlrt.gpu import GpuDecoder, GpuPipeline  # importing needs no torch
        from vlrt.errors import VlrtError
        try:
            GpuDecoder(device="cpu")
        except VlrtError as e:
            assert "needs PyTorch: pip install 'vlrt[gpu]'" in str(e), e
        else:
            raise AssertionError("no error")
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_runtime_does_not_import_the_gpu_package():
    code = "import sys, vlrt, vlrt.runtime.pipeline, vlrt.runtime.video; assert 'vlrt.gpu' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
