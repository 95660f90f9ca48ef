"""kernels/preprocess.cu against its reference, vlrt/ops/preprocess_ref.py.

GPU tests (marked `cuda`): batches of fresh random frames (the seed is printed) with padded rows
and gaps between frames (padding bytes are 255, so reading them would show), in PyTorch tensors,
launched on a torch CUDA stream, outputs filled with NaN before the launch, compared with the
float64 reference frame by frame (tolerances: frame_cases.py); NV12 in every matrix and range.

CPU tests: the comparison itself, on a float32 NumPy emulation of the kernel's arithmetic and on
deliberately wrong output. The CUDA source itself runs on the CPU in test_emulated_kernels.py.
"""
from __future__ import annotations

import kernel_bindings as kb
import numpy as np
import pytest
from frame_cases import CASES, COLOURS, check_output, emulate_float32, make_frames, reference

from vlrt.ops import preprocess_ref as ref


@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("case", [c for c in CASES if c[1] * c[2] <= 640 * 480], ids=lambda c: "-".join(map(str, c)))
def test_float32_emulation_meets_the_gpu_tolerances(rng, case, rounding):
    fmt, w, h, size = case
    frame = make_frames(rng, fmt, w, h, count=2)[int(rng.integers(0, 2))]
    check_output(emulate_float32(fmt, frame, size, rounding), reference(fmt, frame, size, rounding), rounding,
                 np.float32, fmt)


@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
def test_float32_emulation_meets_the_gpu_tolerances_in_every_colour(rng, colour):
    frames = make_frames(rng, "nv12", 451, 301, count=2)
    for rounding in ("uint8", "none"):
        for frame in frames:
            check_output(emulate_float32("nv12", frame, 224, rounding, *colour),
                         reference("nv12", frame, 224, rounding, *colour), rounding, np.float32, "nv12")


def test_check_output_catches_a_shifted_crop(rng):
    frame = make_frames(rng, "rgb24", 451, 300, count=1)[0]
    expected = reference("rgb24", frame, 224, "uint8")
    with pytest.raises(AssertionError):
        check_output(np.roll(expected, 1, axis=2), expected, "uint8", np.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_kernel_matches_reference(torch_cuda, gpu_lib, rng, case, rounding, dtype):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=3 if w * h <= 1920 * 1080 else 2)
    status, out = kb.run_preprocess(gpu_lib, kb.TorchMemory(torch_cuda), fmt, frames, w, h, size, rounding, dtype,
                                    ref.CLIP_MEAN, ref.CLIP_STD)
    assert status == kb.VLRT_OK, gpu_lib.vlrt_status_string(status)
    for i, frame in enumerate(frames):
        check_output(out[i], reference(fmt, frame, size, rounding), rounding, dtype, fmt)


@pytest.mark.cuda
@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
@pytest.mark.parametrize("case", [("nv12", 451, 301, 224), ("nv12", 1920, 1080, 224)],
                         ids=lambda c: "-".join(map(str, c)))
def test_kernel_converts_each_matrix_and_range(torch_cuda, gpu_lib, rng, case, colour, rounding):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=2)
    status, out = kb.run_preprocess(gpu_lib, kb.TorchMemory(torch_cuda), fmt, frames, w, h, size, rounding,
                                    np.float32, ref.CLIP_MEAN, ref.CLIP_STD, matrix=colour[0], color_range=colour[1])
    assert status == kb.VLRT_OK, gpu_lib.vlrt_status_string(status)
    for i, frame in enumerate(frames):
        check_output(out[i], reference(fmt, frame, size, rounding, *colour), rounding, np.float32, fmt)
