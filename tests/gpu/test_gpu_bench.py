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
    bench = load_bench()
    args = argparse.Namespace(videos=2, seconds=2, width=160, height=96, fps=10, workers=2, repeats=1,
                              device=torch.device("cpu"))
    paths = bench.make_videos(tmp_path, args)
    settings = bench.settings_for("ViT-B-32")
    rows, extra = bench.decode_rows(paths, settings, args)
    assert [r["name"].split(",")[0] for r in rows] == ["decode-only"] * 2 + ["decode + preprocess"] * 2
    assert all(r["videos_per_s"] > 0 for r in rows)
    assert extra == {"sampled_frames": 4, "nvdec_fallbacks": {"device is cpu: NVDEC needs a CUDA device": 2}}
    assert "| decode-only, NVDEC (RGB on the GPU) |" in "\n".join(bench._table(rows, "videos"))


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
