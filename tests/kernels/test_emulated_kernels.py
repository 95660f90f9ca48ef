"""The CUDA sources of kernels/ run on the CPU and match their references.

tests/kernels/emulator stands in for the CUDA runtime: g++ compiles token_merge.cu and
preprocess.cu unchanged (only the launch goes through VLRT_LAUNCH), each CUDA thread becomes a
fiber, and __syncthreads and warp shuffles are real barriers. This checks the kernels' indexing,
selection, ordering, tiling and arithmetic with the same inputs, NaN-poisoned outputs and checks
as the GPU tests; it cannot check races, the memory model or speed (emulator/cuda_runtime_api.h).
Sizes are small because every shuffle is a context switch.
"""
from __future__ import annotations

import numpy as np
import pytest

import kernel_bindings as kb
from frame_cases import check_output, make_frames, reference
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
