"""Inputs and checks shared by the token-merge kernel tests (GPU, and the CPU emulator).

Selection must agree exactly with the float64 reference, so inputs whose selection has a near-tie
(a gap under MARGIN that float32 could flip) are drawn again; exact ties (identical rows) are kept
and must follow the reference's tie rules.
"""
from __future__ import annotations

import numpy as np

from vlrt.ops.token_merge import PROTECTED, merge_tokens

MARGIN = 1e-5  # float32 dot products over <= 1024 channels are good to ~1e-6 here
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float16: dict(rtol=2.0 ** -10, atol=1e-5)}

CASES = [  # batch, tokens N, channels C, r, dtype
    (4, 197, 768, 16, np.float32),  # ViT-B/16 at 224, ToMe's usual r
    (4, 197, 768, 16, np.float16),
    (2, 577, 1024, 40, np.float32),  # ViT-L/14 at 336
    (2, 577, 1024, 40, np.float16),
    (3, 50, 64, 24, np.float32),  # ViT-B/32 at 224, the most merges allowed: ceil(50 / 2) - 1
    (2, 2048, 32, 300, np.float16),  # the kernel's token limit
    (5, 10, 3, 4, np.float32),  # fewer channels than a warp has lanes
    (2, 7, 5, 3, np.float16),  # odd N
    (3, 197, 768, 0, np.float32),  # r = 0: a copy, in the original order
]
CASE_IDS = [f"B{b}-N{n}-C{c}-r{r}-{np.dtype(t).name}" for b, n, c, r, t in CASES]


def make_tokens(rng: np.random.Generator, b: int, n: int, c: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """x [B, N, C] whose best scores spread over [0, 1) (each B token leans towards a random A
    token by a random amount; plain Gaussian rows would all score ~0 and near-tie), with unequal
    norms, and sizes [B, N] of 1 to 4 patches as after earlier merges."""
    x = rng.standard_normal((b, n, c))
    partner = rng.integers(0, (n + 1) // 2, (b, n // 2))  # (B, Nb)
    lean = rng.uniform(0.0, 3.0, (b, n // 2, 1))  # (B, Nb, 1)
    x[:, 1::2] += lean * np.take_along_axis(x[:, 0::2], partner[..., None], axis=1)
    x *= rng.uniform(0.5, 2.0, (b, n, 1))
    return x.astype(dtype), rng.integers(1, 5, (b, n)).astype(dtype)


def selection(x: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference's steps 1-5 in float64: (merged [B, Na] bool, dst [B, Na], best, scores)."""
    x64 = x.astype(np.float64)
    m = x64 / np.maximum(np.linalg.norm(x64, axis=-1, keepdims=True), 1e-6)  # (B, N, C)
    scores = m[:, 0::2] @ m[:, 1::2].transpose(0, 2, 1)  # (B, Na, Nb)
    scores[:, 0, :] = PROTECTED
    best, dst = scores.max(axis=-1), scores.argmax(axis=-1)  # (B, Na) each
    order = np.argsort(-best, axis=-1, kind="stable")  # (B, Na)
    merged = np.zeros(best.shape, bool)
    np.put_along_axis(merged, order[:, :r], True, axis=-1)
    return merged, dst, best, scores


def smallest_margin(x: np.ndarray, r: int) -> float:
    """The smallest nonzero float64 gap that decides the selection: between the r-th and (r+1)-th
    best score, and between the best and second-best partner of each merged token."""
    if r == 0:
        return np.inf
    merged, _, best, scores = selection(x, r)
    gaps = []
    for i in range(x.shape[0]):
        ranked = np.sort(best[i])[::-1]
        if r < ranked.size:
            gaps.append(ranked[r - 1] - ranked[r])
        if scores.shape[-1] > 1:
            top2 = np.sort(scores[i][merged[i]], axis=-1)[:, -2:]  # (r, 2)
            gaps += list(top2[:, 1] - top2[:, 0])
    gaps = np.asarray(gaps)
    gaps = gaps[gaps > 0]  # exact ties come from identical rows and are decided by the tie rules
    return float(gaps.min()) if gaps.size else np.inf


def draw(rng, b, n, c, r, dtype, tries=50):
    """make_tokens, drawn again while the selection has a near-tie float32 could flip."""
    for _ in range(tries):
        x, size = make_tokens(rng, b, n, c, dtype)
        if smallest_margin(x, r) > MARGIN:
            return x, size
    raise AssertionError(f"no input without a near-tie in {tries} draws")


def with_ties(rng, dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact ties in both rules, and a class token that would win were it not protected.

    A tokens 2 and 4 (rows 4 and 8) are identical, so their best scores tie; r is chosen so the
    selection boundary falls between them: the lower index must merge, the other stay. B tokens 1
    and 2 (rows 3 and 5) are identical near-copies of A token 3 (row 6), so that token's best
    partner ties: it must merge into B token 1. Row 0 (the class token) equals row 1.
    """
    for _ in range(50):
        x, size = make_tokens(rng, 2, 41, 48, dtype)
        x[:, 8] = x[:, 4]
        x[:, 3] = x[:, 6] + np.asarray(0.01, dtype) * x[:, 3]
        x[:, 5] = x[:, 3]
        x[:, 0] = x[:, 1]
        _, _, best, _ = selection(x, 1)
        order = np.argsort(-best[0], kind="stable")
        r = int(np.flatnonzero(order == 2)[0]) + 1  # A token 2 is the last to merge in element 0
        if smallest_margin(x, r) > MARGIN:
            return x, size, r
    raise AssertionError("no tie input without a near-tie in 50 draws")


def check_merge(out_x, out_s, x, size, r, dtype) -> None:
    """Outputs of one merge step against the reference, with the tolerances stated above."""
    b, n, c = x.shape
    assert out_x.shape == (b, n - r, c) and out_s.shape == (b, n - r)
    assert np.isfinite(out_x).all() and np.isfinite(out_s).all(), "output left unwritten (NaN poison survived)"
    ref_x, ref_s = merge_tokens(x, size, r)
    np.testing.assert_array_equal(out_s, ref_s)  # sums of small integers: exact
    np.testing.assert_allclose(out_x.astype(np.float64), ref_x.astype(np.float64), **TOLERANCE[dtype])
    if r == 0:
        np.testing.assert_array_equal(out_x, x)
        return
    merged, dst, _, _ = selection(x, r)
    na = (n + 1) // 2
    for i in range(b):
        np.testing.assert_array_equal(out_x[i, : na - r], x[i, 0::2][~merged[i]])  # kept A rows: copies
        untouched = np.setdiff1d(np.arange(n // 2), dst[i][merged[i]])
        np.testing.assert_array_equal(out_x[i, na - r + untouched], x[i, 1 + 2 * untouched])  # B rows: copies


def emulate_float32(x: np.ndarray, size: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's arithmetic in float32 NumPy (its rank rule and merge order, not its exact
    summation order): what the GPU tolerances must allow for."""
    if r == 0:
        return x.copy(), size.copy()
    xf, sf = x.astype(np.float32), size.astype(np.float32)
    b, n, c = x.shape
    na = (n + 1) // 2
    inv = np.float32(1) / np.maximum(np.sqrt((xf * xf).sum(-1)), np.float32(1e-6))  # (B, N)
    scores = (xf[:, 0::2] @ xf[:, 1::2].transpose(0, 2, 1)) * inv[:, 0::2, None] * inv[:, None, 1::2]  # (B, Na, Nb)
    scores[:, 0, :] = np.float32(PROTECTED)
    best, dst = scores.max(-1), scores.argmax(-1)  # (B, Na)
    out_x, out_s = np.empty((b, n - r, c), x.dtype), np.empty((b, n - r), x.dtype)
    for i in range(b):
        rank = np.argsort(np.argsort(-best[i], kind="stable"), kind="stable")  # (Na,)
        merged = rank < r
        out_x[i, : na - r], out_s[i, : na - r] = x[i, 0::2][~merged], size[i, 0::2][~merged]
        for j in range(n // 2):
            group = np.flatnonzero(merged & (dst[i] == j))  # increasing A index
            row, xb = na - r + j, xf[i, 2 * j + 1]
            if group.size == 0:
                out_x[i, row], out_s[i, row] = x[i, 2 * j + 1], size[i, 2 * j + 1]
                continue
            acc, total = xb * sf[i, 2 * j + 1], sf[i, 2 * j + 1]
            for a in group:
                acc, total = acc + xf[i, 2 * a] * sf[i, 2 * a], total + sf[i, 2 * a]
            out_x[i, row], out_s[i, row] = acc / total, total
    return out_x, out_s
