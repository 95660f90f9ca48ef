"""The NumPy definition of token merging (vlrt/ops/token_merge.py): the properties every
implementation (ONNX pass, CUDA kernel) inherits from it."""
import numpy as np
import pytest

from vlrt.ops.token_merge import merge_counts, merge_tokens


def tokens(b=2, n=17, c=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, n, c)).astype(np.float32), rng.integers(1, 4, (b, n)).astype(np.float32)


def test_r_zero_is_identity():
    x, s = tokens()
    got_x, got_s = merge_tokens(x, s, 0)
    assert np.array_equal(got_x, x) and np.array_equal(got_s, s)


@pytest.mark.parametrize("n", [2, 3, 16, 17, 50])
def test_shapes_sizes_and_class_token(n):
    x, s = tokens(n=n)
    r = (n + 1) // 2 - 1
    got_x, got_s = merge_tokens(x, s, r)
    assert got_x.shape == (2, n - r, 8) and got_s.shape == (2, n - r)
    np.testing.assert_allclose(got_s.sum(1), s.sum(1))  # every patch is still counted once
    assert np.array_equal(got_x[:, 0], x[:, 0]) and np.array_equal(got_s[:, 0], s[:, 0])  # class token first, intact


def test_merged_token_is_the_size_weighted_mean():
    # Token 3 (B) and token 4 (A) are near-duplicates; everything else is orthogonal-ish.
    x = np.eye(6, 6, dtype=np.float32)[None] * 5.0
    x[0, 4] = x[0, 3] + 0.01
    s = np.array([[1, 1, 1, 2, 3, 1]], np.float32)
    got_x, got_s = merge_tokens(x, s, 1)
    # A = tokens 0, 2, 4; B = 1, 3, 5. Token 4 merges into token 3; kept A: 0, 2; then B: 1, 3', 5.
    np.testing.assert_allclose(got_s, [[1, 1, 1, 5, 1]])
    np.testing.assert_allclose(got_x[0, 3], (2 * x[0, 3] + 3 * x[0, 4]) / 5, rtol=1e-6)
    np.testing.assert_array_equal(got_x[0, [0, 1, 2, 4]], x[0, [0, 2, 1, 5]])


def test_ties_merge_the_lower_index_first():
    x = np.zeros((1, 7, 2), np.float32)
    x[0, :, 0] = 1.0  # all tokens identical: every A token ties with score 1
    x[0, 0] = [0.0, 1.0]  # the class token differs (and is protected anyway)
    _, got_s = merge_tokens(x, np.ones((1, 7), np.float32), 2)
    # A = 0, 2, 4, 6: tokens 2 and 4 merge (lowest indices among the tied), into B token 1 (first max)
    np.testing.assert_array_equal(got_s, [[1, 1, 3, 1, 1]])


def test_refuses_merging_too_many():
    x, s = tokens(n=9)
    with pytest.raises(ValueError, match="cannot merge 5 of 9"):
        merge_tokens(x, s, 5)


def test_merge_counts_caps():
    assert merge_counts(50, 12, 2) == [2] * 12  # ViT-B/32 at 224: 50 -> 26 tokens
    assert merge_counts(17, 4, 2) == [2, 2, 2, 2]
    counts = merge_counts(17, 4, 8)
    n = 17
    for k in counts:
        assert k <= (n + 1) // 2 - 1
        n -= k
    assert n >= 2 and counts[0] == 8
