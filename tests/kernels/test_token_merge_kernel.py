"""kernels/token_merge.cu against its reference, vlrt/ops/token_merge.py::merge_tokens.

GPU tests (marked `cuda`): fresh random inputs each run (the seed is printed), in PyTorch tensors,
launched on a torch CUDA stream, outputs filled with NaN before the launch, compared with the
float64 reference (tolerances: merge_cases.py); the same launch twice must give the same bits.

CPU tests: the inputs and checks themselves, on a float32 NumPy emulation of the kernel's
arithmetic (which shows the tolerances leave room for float32), and on deliberately wrong output.
The CUDA source itself runs on the CPU in test_emulated_kernels.py.
"""
from __future__ import annotations

import kernel_bindings as kb
import numpy as np
import pytest
from merge_cases import CASE_IDS, CASES, check_merge, draw, emulate_float32, make_tokens, selection, with_ties

from vlrt.ops.token_merge import merge_tokens


@pytest.mark.parametrize("case", [c for c in CASES if c[1] * c[2] <= 197 * 768], ids=lambda c: f"N{c[1]}-C{c[2]}")
def test_float32_emulation_meets_the_gpu_tolerances(rng, case):
    b, n, c, r, dtype = case
    x, size = draw(rng, b, n, c, r, dtype)
    check_merge(*emulate_float32(x, size, r), x, size, r, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_tie_inputs_exercise_both_tie_rules(rng, dtype):
    x, size, r = with_ties(rng, dtype)
    merged, dst, _, _ = selection(x, r)
    assert merged[0, 2] and not merged[0, 4]  # equal best scores: the lower index merges
    assert merged[:, 3].all() and (dst[:, 3] == 1).all()  # equal partners: the first one
    assert not merged[:, 0].any()  # protected
    check_merge(*emulate_float32(x, size, r), x, size, r, dtype)


def test_check_merge_catches_a_wrong_selection(rng):
    x, size = draw(rng, 2, 50, 64, 10, np.float32)
    wrong_x, wrong_s = merge_tokens(x, size, 10)
    wrong_x[:, [0, 1]] = wrong_x[:, [1, 0]]  # two output rows swapped
    with pytest.raises(AssertionError):
        check_merge(wrong_x, wrong_s, x, size, 10, np.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kernel_matches_reference(torch_cuda, gpu_lib, rng, case):
    b, n, c, r, dtype = case
    x, size = draw(rng, b, n, c, r, dtype)
    mem = kb.TorchMemory(torch_cuda)
    status, out_x, out_s = kb.run_token_merge(gpu_lib, mem, x, size, r)
    assert status == kb.VLRT_OK, gpu_lib.vlrt_status_string(status)
    check_merge(out_x, out_s, x, size, r, dtype)
    _, again_x, again_s = kb.run_token_merge(gpu_lib, mem, x, size, r)
    assert again_x.tobytes() == out_x.tobytes() and again_s.tobytes() == out_s.tobytes(), "not deterministic"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_kernel_follows_the_tie_rules(torch_cuda, gpu_lib, rng, dtype):
    x, size, r = with_ties(rng, dtype)
    status, out_x, out_s = kb.run_token_merge(gpu_lib, kb.TorchMemory(torch_cuda), x, size, r)
    assert status == kb.VLRT_OK, gpu_lib.vlrt_status_string(status)
    check_merge(out_x, out_s, x, size, r, dtype)


@pytest.mark.cuda
def test_kernel_refuses_in_place_and_too_many_tokens(torch_cuda, gpu_lib, rng):
    mem = kb.TorchMemory(torch_cuda)
    x, size = make_tokens(rng, 1, 2050, 8, np.float32)
    assert kb.run_token_merge(gpu_lib, mem, x, size, 4)[0] == kb.VLRT_TOO_LARGE
    x, size = make_tokens(rng, 2, 9, 8, np.float32)
    dx, ds, os_ = mem.upload(x), mem.upload(size), mem.full((2, 7), 0.0, np.float32)
    status = gpu_lib.vlrt_token_merge(dx.data_ptr(), ds.data_ptr(), dx.data_ptr(), os_.data_ptr(), 2, 9, 8, 2,
                                      kb.VLRT_FLOAT32, mem.stream)
    assert status == kb.VLRT_ALIASED
