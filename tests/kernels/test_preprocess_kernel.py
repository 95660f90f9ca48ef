"""kernels/preprocess.cu against its reference, vlrt/ops/preprocess_ref.py.

GPU tests (marked `cuda`): batches of fresh random frames (the seed is printed) with padded rows
and gaps between frames (padding bytes are 255, so reading them would show), outputs filled with
NaN before the launch, compared with the float64 reference frame by frame (tolerances:
frame_cases.py).

CPU tests: the comparison itself, on a float32 NumPy emulation of the kernel's arithmetic and on
deliberately wrong output. The CUDA source itself runs on the CPU in test_emulated_kernels.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import kernel_bindings as kb
from frame_cases import CASES, check_output, emulate_float32, make_frames, reference
from vlrt.ops import preprocess_ref as ref

@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("case", [c for c in CASES if c[1] * c[2] <= 640 * 480], ids=lambda c: "-".join(map(str, c)))
def test_float32_emulation_meets_the_gpu_tolerances(rng, case, rounding):
    fmt, w, h, size = case
    frame = make_frames(rng, fmt, w, h, count=2)[int(rng.integers(0, 2))]
    check_output(emulate_float32(fmt, frame, size, rounding), reference(fmt, frame, size, rounding), rounding,
                 np.float32, fmt)


def test_check_output_catches_a_shifted_crop(rng):
    frame = make_frames(rng, "rgb24", 451, 300, count=1)[0]
    expected = reference("rgb24", frame, 224, "uint8")
    with pytest.raises(AssertionError):
        check_output(np.roll(expected, 1, axis=2), expected, "uint8", np.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rounding", ["uint8", "none"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_kernel_matches_reference(cupy, gpu_lib, rng, case, rounding, dtype):
    fmt, w, h, size = case
    frames = make_frames(rng, fmt, w, h, count=3 if w * h <= 1920 * 1080 else 2)
    status, out = kb.run_preprocess(gpu_lib, kb.CupyMemory(cupy), fmt, frames, w, h, size, rounding, dtype,
                                    ref.CLIP_MEAN, ref.CLIP_STD)
    assert status == kb.VLRT_OK, gpu_lib.vlrt_status_string(status)
    for i, frame in enumerate(frames):
        check_output(out[i], reference(fmt, frame, size, rounding), rounding, dtype, fmt)
