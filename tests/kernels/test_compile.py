"""Compile-only check of kernels/ (no GPU): every kernel builds for every listed architecture, the
library links and loads, the TensorRT plugin builds against kernel-lens' headers, and the
host-side code (geometry, argument checks, the plugin's methods) behaves.

CI runs this with the nvcc wheels listed in docs/kernels.md; it skips only when no nvcc exists.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import kernel_bindings as kb
import pytest


def test_every_kernel_has_a_cubin_for_every_arch(kernels_build, build_module):
    assert kernels_build.archs == ("80", "87", "89", "90")
    cu = [c for c in kernels_build.objects if c.source.endswith(".cu")]
    assert sorted(c.source for c in cu) == ["preprocess.cu", "token_merge.cu"]
    for c in cu:
        assert c.output.stat().st_size > 0
        entries = build_module.fatbin_entries(c.output)
        cubins = sorted(arch for kind, arch, is_elf in entries if kind == "elf" and is_elf)
        assert cubins == [80, 87, 89, 90], (c.source, entries)
        assert ("ptx", 90, False) in entries, (c.source, entries)  # PTX of the newest, for later GPUs
    assert build_module.verify(kernels_build) == []


def test_cmake_defaults_match_the_checked_architectures(build_module):
    """CMakeLists.txt's default targets are what the check compiles: SASS for each of build.py's
    DEFAULT_ARCHS ("NN-real"), and SASS plus PTX for the newest (plain "NN"), as build.py's gencode."""
    text = (kb.ROOT / "CMakeLists.txt").read_text()
    match = re.search(r'set\(VLRT_CUDA_ARCHITECTURES "([^"]*)" CACHE STRING', text)
    assert match, "VLRT_CUDA_ARCHITECTURES default not found in CMakeLists.txt"
    targets = match.group(1).split(";")
    newest = max(build_module.DEFAULT_ARCHS, key=int)
    assert targets == [f"{a}-real" for a in build_module.DEFAULT_ARCHS if a != newest] + [newest]
    assert "80" in build_module.DEFAULT_ARCHS  # A100
    assert build_module.gencode(build_module.DEFAULT_ARCHS)[-1] == f"-gencode=arch=compute_{newest},code=compute_{newest}"


def test_cuobjdump_agrees(kernels_build, build_module):
    if kernels_build.toolchain.cuobjdump is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump); the fatbin was read directly")
    for c in kernels_build.objects:
        if c.source.endswith(".cu"):
            elfs = build_module.cuobjdump_elfs(kernels_build.toolchain, c.output)
            assert sorted(e.rsplit(".", 2)[1] for e in elfs) == ["sm_80", "sm_87", "sm_89", "sm_90"], elfs


def test_library_exports_the_launchers_and_plugin_entry_points(kernels_build, build_module):
    assert kernels_build.plugin, ("the TensorRT plugin was not built: " + "; ".join(kernels_build.notes))
    lib = ctypes.CDLL(str(kernels_build.library))
    for name in build_module.EXPORTS + build_module.PLUGIN_EXPORTS:
        assert hasattr(lib, name), name


def test_plugin_host_check(kernels_build, tmp_path):
    """The plugin's methods that need neither libnvinfer nor a GPU (tests/kernels/plugin_host_check.cpp)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    tc = kernels_build.toolchain
    cuda_include = tc.nvcc.parent.parent / "include"
    exe = tmp_path / "plugin_host_check"
    subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-isystem{tc.tensorrt_include}",
                    f"-isystem{cuda_include}", str(Path(__file__).with_name("plugin_host_check.cpp")),
                    "-o", str(exe), "-ldl"], check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe), str(kernels_build.library)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "47 passed, 0 failed", result.stdout


SIZES = [(640, 480), (480, 640), (451, 300), (1000, 100), (224, 224), (229, 224), (1920, 1080), (1, 1),
         (3, 500), (500, 3), (225, 224), (227, 224), (226, 224), (720, 1280), (333, 777)]


@pytest.mark.parametrize("size", [224, 336, 288, 1])
def test_geometry_matches_runtime_preprocess(host_lib, size):
    from vlrt.runtime.preprocess import Preprocess

    pre = Preprocess(size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for w, h in SIZES + [(size + d, size) for d in range(12)] + [(size, size + d) for d in range(12)]:
        status, (rw, rh, left, top) = kb.geometry(host_lib, w, h, size)
        assert status == kb.VLRT_OK
        assert (rw, rh) == pre.resized_size(w, h), (w, h)
        assert (left, top) == pre.crop_box(w, h)[:2], (w, h)


def test_geometry_refuses_bad_sizes(host_lib):
    assert kb.geometry(host_lib, 0, 10, 224)[0] == kb.VLRT_BAD_ARGUMENT
    assert kb.geometry(host_lib, 10, 10, 0)[0] == kb.VLRT_BAD_ARGUMENT
    assert kb.geometry(host_lib, 16385, 10, 224)[0] == kb.VLRT_TOO_LARGE
    assert kb.geometry(host_lib, 10, 10, 2049)[0] == kb.VLRT_TOO_LARGE


def _merge(lib, *, x=1, size=2, x_out=3, size_out=4, batch=2, tokens=197, channels=64, r=16, dtype=0):
    """vlrt_token_merge with fake pointers: only its host-side checks run (they come first)."""
    return lib.vlrt_token_merge(x, size, x_out, size_out, batch, tokens, channels, r, dtype, None)


def test_token_merge_refuses_bad_arguments(host_lib):
    big = 1 << 40  # fake, non-overlapping addresses
    ok = dict(x=big, size=2 * big, x_out=3 * big, size_out=4 * big)
    assert _merge(host_lib, **{**ok, "x": 0}) == kb.VLRT_BAD_ARGUMENT
    assert _merge(host_lib, **ok, dtype=2) == kb.VLRT_BAD_ARGUMENT
    assert _merge(host_lib, **ok, channels=0) == kb.VLRT_BAD_ARGUMENT
    assert _merge(host_lib, **ok, r=99) == kb.VLRT_BAD_MERGE  # at most ceil(197 / 2) - 1 = 98
    assert _merge(host_lib, **ok, r=-1) == kb.VLRT_BAD_MERGE
    assert _merge(host_lib, **ok, tokens=1, r=1) == kb.VLRT_BAD_MERGE
    assert _merge(host_lib, **ok, tokens=2049, r=16) == kb.VLRT_TOO_LARGE
    assert _merge(host_lib, **{**ok, "x_out": big + 8}) == kb.VLRT_ALIASED  # inside x
    assert _merge(host_lib, **ok, batch=0) == kb.VLRT_OK  # nothing to do, nothing launched
    assert host_lib.vlrt_token_merge_shared_bytes(2048) == 36864
    assert host_lib.vlrt_token_merge_shared_bytes(2049) == 0
    assert host_lib.vlrt_status_string(kb.VLRT_BAD_MERGE) == b"r must satisfy 0 <= r <= ceil(N / 2) - 1"


def test_preprocess_refuses_bad_arguments(host_lib):
    def run(batch=1, size=224, rounding=0, dtype=0, std=(0.27, 0.26, 0.28), **frame):
        fields = dict(format=kb.VLRT_RGB24, width=640, height=480, plane0=1 << 40, plane1=0, pitch0=1920,
                      pitch1=0, frame_stride0=0, frame_stride1=0)
        fields.update(frame)
        frames = kb.Frames(**fields)
        return host_lib.vlrt_preprocess(ctypes.byref(frames), batch, size, rounding, kb.floats3((0.5,) * 3),
                                        kb.floats3(std), 1 << 41, dtype, None)

    assert run(batch=0) == kb.VLRT_OK
    assert run(format=2) == kb.VLRT_BAD_ARGUMENT
    assert run(matrix=2) == kb.VLRT_BAD_ARGUMENT  # BT.2020 and the rest are refused, not converted as BT.601
    assert run(range=2) == kb.VLRT_BAD_ARGUMENT
    assert run(matrix=-1) == kb.VLRT_BAD_ARGUMENT
    nv12 = dict(format=kb.VLRT_NV12, pitch0=640, plane1=1 << 42, pitch1=640)
    assert run(batch=0, matrix=kb.MATRIX["bt709"], range=kb.RANGE["full"], **nv12) == kb.VLRT_OK
    odd = dict(nv12, width=641, height=481, pitch0=641)  # chroma rows hold ceil(641 / 2) = 321 pairs
    assert run(**{**odd, "pitch1": 641}) == kb.VLRT_BAD_ARGUMENT
    assert run(batch=0, **{**odd, "pitch1": 642}) == kb.VLRT_OK
    assert run(plane0=0) == kb.VLRT_BAD_ARGUMENT
    assert run(pitch0=1919) == kb.VLRT_BAD_ARGUMENT  # an RGB24 row is 3 * width bytes
    assert run(format=kb.VLRT_NV12, pitch0=640) == kb.VLRT_BAD_ARGUMENT  # no chroma plane
    assert run(format=kb.VLRT_NV12, pitch0=640, plane1=1 << 42, pitch1=638) == kb.VLRT_BAD_ARGUMENT
    assert run(batch=0, format=kb.VLRT_NV12, pitch0=640, plane1=1 << 42, pitch1=640) == kb.VLRT_OK
    assert run(rounding=2) == kb.VLRT_BAD_ARGUMENT
    assert run(dtype=5) == kb.VLRT_BAD_ARGUMENT
    assert run(std=(0.27, 0.0, 0.28)) == kb.VLRT_BAD_ARGUMENT
    assert run(width=16385, pitch0=3 * 16385) == kb.VLRT_TOO_LARGE
    assert run(batch=65536) == kb.VLRT_TOO_LARGE
    # a 16384-pixel side to 224 is a 73x downscale: 295 taps, past the 257 the kernel allows
    assert run(width=16384, height=16384, pitch0=3 * 16384) == kb.VLRT_TOO_LARGE
    assert run(batch=0, width=14336, height=14336, pitch0=3 * 14336) == kb.VLRT_OK  # 64x: 257 taps
