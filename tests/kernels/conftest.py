"""Fixtures of the kernel tests: the compile-only build and the CPU emulation (CPU), and the GPU
library (CUDA).

The CPU build skips only when no nvcc exists at all. GPU tests (marked `cuda`) drive the kernels
through PyTorch tensors and streams (no CuPy). They load the library named by VLRT_KERNELS_LIB
(built elsewhere, e.g. by `python kernels/build.py lib --arch 90`, since a GPU machine may have
no nvcc), else build one for the device with the nvcc found here. They skip when PyTorch, a CUDA
device or a library is missing; VLRT_REQUIRE_GPU=1 makes that a failure, and a VLRT_KERNELS_LIB
that is missing or has no code for the device always fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kernel_bindings as kb
import pytest


@pytest.fixture(scope="session")
def build_module():
    return kb.load_build_module()


@pytest.fixture(scope="session")
def kernels_build(build_module, tmp_path_factory):
    """kernels/build.py's compile-only build for its default architectures, done once."""
    if build_module.find_nvcc() is None:
        pytest.skip("no nvcc found (pip install nvidia-cuda-nvcc, see docs/kernels.md, or set VLRT_NVCC)")
    return build_module.build(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(scope="session")
def host_lib(kernels_build):
    """The built library, loaded for its host-side functions (no GPU needed)."""
    return kb.load(kernels_build.library)


@pytest.fixture(scope="session")
def emulated_lib(tmp_path_factory):
    """kernels/*.cu compiled by g++ against tests/kernels/emulator: the device code, run on the CPU."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++ to build the CPU emulation of the kernels")
    kernels = kb.ROOT / "kernels"
    out = tmp_path_factory.mktemp("emulated") / "libvlrt_kernels_emulated.so"
    sources = [kernels / "token_merge.cu", kernels / "preprocess.cu", kernels / "status.cpp"]
    subprocess.run([cxx, "-std=c++20", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
                    f"-I{Path(__file__).with_name('emulator')}", f"-I{kernels}", "-x", "c++", *map(str, sources),
                    "-o", str(out)], check=True, capture_output=True, text=True)
    return kb.load(out)


def _no_gpu(reason: str):
    if os.environ.get("VLRT_REQUIRE_GPU") == "1":
        pytest.fail(f"VLRT_REQUIRE_GPU=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def torch_cuda():
    """PyTorch, with a CUDA device it can use."""
    try:
        import torch
    except ImportError:
        _no_gpu("PyTorch is not installed")
    if not torch.cuda.is_available():
        _no_gpu("PyTorch sees no CUDA device")
    return torch


@pytest.fixture(scope="session")
def gpu_lib(torch_cuda, build_module, tmp_path_factory):
    """libvlrt_kernels.so with code for this device, loaded."""
    major, minor = torch_cuda.cuda.get_device_capability()
    arch = major * 10 + minor  # e.g. 90
    given = os.environ.get("VLRT_KERNELS_LIB")
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"VLRT_KERNELS_LIB={given} does not exist")
        problem = build_module.missing_device_code(path, arch)
        if problem:
            pytest.fail(problem)
        return kb.load(path)
    if build_module.find_nvcc() is None:
        _no_gpu("no VLRT_KERNELS_LIB and no nvcc to build the kernels")
    report = build_module.build(tmp_path_factory.mktemp(f"kernels_sm{arch}"), (str(arch),), plugin=False,
                                strict=False)
    return kb.load(report.library)


@pytest.fixture
def rng(request):
    """A fresh generator per test; its seed is printed so that a failure can be replayed."""
    import numpy as np

    seed = int.from_bytes(os.urandom(8), "little")
    print(f"{request.node.name}: seed {seed}")
    return np.random.default_rng(seed)
