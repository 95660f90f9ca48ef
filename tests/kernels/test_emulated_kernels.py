"""The CUDA sources of kernels/ run on the CPU and match their references.

tests/kernels/emulator stands in for the CUDA runtime: g++ compiles token_merge.cu and
preprocess.cu unchanged (only the launch goes through VLRT_LAUNCH), each CUDA thread becomes a
fiber, and __syncthreads and warp shuffles are real barriers. This checks the kernels' indexing,
selection, ordering, tiling and arithmetic with the same inputs, NaN-poisoned outputs and checks
as the GPU tests; it cannot check races, the memory model or speed (emulator/cuda_runtime_api.h).
Sizes are small because every shuffle is a context switch.
"""
from __future__ import annotations

import kernel_bindings as kb
import numpy as np
import pytest
from frame_cases import COLOURS, av_frame, check_output, make_frames, reference
from merge_cases import check_merge, draw, with_ties

from vlrt.ops import preprocess_ref as ref

MERGE_CASES = [  # batch, tokens N, channels C, r, dtype
    (2, 41, 48, 10, np.float32),
    (2, 41, 48, 10, np.float16),
    (1, 50, 64, 24, np.float32),  # the most merges allowed: ceil(50 / 2) - 1
    (3, 7, 5, 3, np.float16),  # odd N
    (2, 10, 3, 4, np.float32),  # fewer channels than a warp has lanes
    (2, 9, 4, 0, np.float32),  # r = 0: a copy
]


@pytest.mark.parametrize("case", MERGE_CASES, ids=lambda c: f"B{c[0]}-N{c[1]}-C{c[2]}-r{c[3]}-{np.dtype(c[4]).name}")
def test_token_merge_source_matches_reference(emulated_lib, rng, case):
    b, n, c, r, dtype = case
    x, size = draw(rng, b, n, c, r, dtype)
    status, out_x, out_s = kb.run_token_merge(emulated_lib, kb.HostMemory(), x, size, r)
    assert status == kb.VLRT_OK
    check_merge(out_x, out_s, x, size, r, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_token_merge_source_follows_the_tie_rules(emulated_lib, rng, dtype):
    x, size, r = with_ties(rng, dtype)
    status, out_x, out_s = kb.run_token_merge(emulated_lib, kb.HostMemory(), x, size, r)
    assert status == kb.VLRT_OK
    check_merge(out_x, out_s, x, size, r, dtype)


FRAME_CASES = [  # format, width, height, S: small, then real geometry
    ("rgb24", 64, 48, 32), ("rgb24", 45, 30, 24), ("rgb24", 100, 10, 24), ("rgb24", 20, 20, 40),
    ("rgb24", 640, 480, 32),  # a 15x downscale: many row chunks per tile
    ("nv12", 64, 48, 32), ("nv12", 45, 31, 20),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("case", FRAME_CASES, ids=lambda c: "-".join(map(str, c)))
def test_preprocess_source_matches_reference(emulated_lib, rng, case, rounding, dtype):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=2)
    status, out = kb.run_preprocess(emulated_lib, kb.HostMemory(), fmt, frames, w, h, size, rounding, dtype,
                                    ref.CLIP_MEAN, ref.CLIP_STD)
    assert status == kb.VLRT_OK
    for i, frame in enumerate(frames):
        check_output(out[i], reference(fmt, frame, size, rounding), rounding, dtype, fmt)


@pytest.mark.parametrize("case", [("rgb24", 451, 300, 224), ("nv12", 640, 480, 224), ("rgb24", 224, 224, 336)],
                         ids=lambda c: "-".join(map(str, c)))
def test_preprocess_source_at_full_size(emulated_lib, rng, case):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=1)
    status, out = kb.run_preprocess(emulated_lib, kb.HostMemory(), fmt, frames, w, h, size, "uint8", np.float32,
                                    ref.CLIP_MEAN, ref.CLIP_STD)
    assert status == kb.VLRT_OK
    check_output(out[0], reference(fmt, frames[0], size, "uint8"), "uint8", np.float32, fmt)


# The CPU path (swscale, then Pillow) against the kernel, on frames of even height, in pixel levels:
# measured at most 3 levels, mean at most 0.55 (limited range; 0.25 full), over every matrix and
# range at 32x32 -> 32 (the conversion alone), 45x30 -> 24, 33x18 -> 16 and 64x48 -> 32. The
# wrong matrix or range gives a mean of 0.9 to 13 levels on these frames, at least 3.3 on noise.
CPU_PATH_MAX, CPU_PATH_MEAN = 3.0 + 1e-3, 0.75
LEVELS = 255.0 * np.asarray(ref.CLIP_STD)[:, None, None]  # (3, 1, 1): normalised units -> levels


def cpu_path_levels(out: np.ndarray, frame, size: int, matrix: str, color_range: str) -> np.ndarray:
    """|kernel - CPU path| in levels: vlrt's CPU preprocessing of the same planes as a decoded
    yuv420p frame with these colour tags (swscale to rgb24, then Pillow's resize)."""
    pytest.importorskip("av")
    from vlrt.runtime.preprocess import Preprocess

    cpu = Preprocess(size=size, mean=ref.CLIP_MEAN, std=ref.CLIP_STD).from_av_frame(av_frame(*frame, matrix, color_range))
    return np.abs(out.astype(np.float64) - cpu) * LEVELS  # (3, S, S)


@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
@pytest.mark.parametrize("case", [("nv12", 45, 31, 20), ("nv12", 33, 17, 24), ("nv12", 31, 33, 31)],
                         ids=lambda c: "-".join(map(str, c)))
def test_preprocess_source_converts_each_matrix_and_range(emulated_lib, rng, case, colour, rounding):
    """Odd widths and heights (ceil(W/2) x ceil(H/2) chroma samples, the last row and column
    reading the last sample), downscaled, upscaled and at the source's own width."""
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=2)
    status, out = kb.run_preprocess(emulated_lib, kb.HostMemory(), fmt, frames, w, h, size, rounding, np.float32,
                                    ref.CLIP_MEAN, ref.CLIP_STD, matrix=colour[0], color_range=colour[1])
    assert status == kb.VLRT_OK
    for i, frame in enumerate(frames):
        check_output(out[i], reference(fmt, frame, size, rounding, *colour), rounding, np.float32, fmt)


@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
@pytest.mark.parametrize("case", [("nv12", 32, 32, 32), ("nv12", 45, 30, 24), ("nv12", 33, 18, 16)],
                         ids=lambda c: "-".join(map(str, c)))
def test_preprocess_source_matches_the_cpu_path(emulated_lib, rng, case, colour):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=2)
    status, out = kb.run_preprocess(emulated_lib, kb.HostMemory(), fmt, frames, w, h, size, "uint8", np.float32,
                                    ref.CLIP_MEAN, ref.CLIP_STD, matrix=colour[0], color_range=colour[1])
    assert status == kb.VLRT_OK
    for i, frame in enumerate(frames):
        diff = cpu_path_levels(out[i], frame, size, *colour)
        assert diff.max() <= CPU_PATH_MAX and diff.mean() <= CPU_PATH_MEAN, (diff.max(), diff.mean())


@pytest.mark.parametrize("wrong", ["matrix", "range"])
def test_cpu_path_comparison_catches_a_wrong_matrix_or_range(emulated_lib, rng, wrong):
    frame = make_frames(rng, "nv12", 32, 32, count=2)[1]  # chroma noise: every coefficient matters
    status, out = kb.run_preprocess(emulated_lib, kb.HostMemory(), "nv12", [frame], 32, 32, 32, "uint8", np.float32,
                                    ref.CLIP_MEAN, ref.CLIP_STD, matrix="bt601", color_range="limited")
    assert status == kb.VLRT_OK
    tags = ("bt709", "limited") if wrong == "matrix" else ("bt601", "full")
    assert cpu_path_levels(out[0], frame, 32, *tags).mean() > 3 * CPU_PATH_MEAN


def test_torch_tensors_drive_the_kernels(emulated_lib, rng):
    """The GPU tests' TorchMemory (tensors, data_ptr(), dtypes), here on CPU tensors: only the
    CUDA stream is left for a GPU session to show."""
    torch = pytest.importorskip("torch")
    mem = kb.TorchMemory(torch, device="cpu")
    x, size = draw(rng, 2, 41, 48, 10, np.float16)
    status, out_x, out_s = kb.run_token_merge(emulated_lib, mem, x, size, 10)
    assert status == kb.VLRT_OK and out_x.dtype == np.float16
    check_merge(out_x, out_s, x, size, 10, np.float16)
    frames = make_frames(rng, "nv12", 45, 31, count=2)
    status, out = kb.run_preprocess(emulated_lib, mem, "nv12", frames, 45, 31, 20, "uint8", np.float16,
                                    ref.CLIP_MEAN, ref.CLIP_STD, matrix="bt709", color_range="full")
    assert status == kb.VLRT_OK
    for i, frame in enumerate(frames):
        check_output(out[i], reference("nv12", frame, 20, "uint8", "bt709", "full"), "uint8", np.float16, "nv12")


def test_kernel_benchmark_runs(emulated_lib, tmp_path):
    """The GPU session's kernel benchmark (bench_kernels.py), on tiny inputs with the emulator's
    library and CPU tensors: its plumbing, and that the kernel and vlrt.gpu's PyTorch path agree."""
    pytest.importorskip("torch")
    import json

    import bench_kernels

    assert bench_kernels.main(["--lib", emulated_lib._name, "--out", str(tmp_path), "--device", "cpu", "--smoke",
                               "--repeat", "2"]) == 0
    report = json.loads((tmp_path / "kernels-bench.json").read_text())
    assert [p["format"] for p in report["preprocess"]] == ["nv12", "rgb24"] and len(report["token_merge"]) == 1
    for p in report["preprocess"]:
        assert p["kernel_vs_pytorch_levels"]["max"] <= 3.01, p  # both within ~2 levels of the CPU path
    assert "| token merge" in (tmp_path / "kernels-bench.md").read_text()
