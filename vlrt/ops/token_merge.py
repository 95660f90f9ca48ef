"""Token merging (ToMe-style bipartite soft matching): the NumPy reference.

This file defines what "merge r tokens" means in vlrt. The ONNX pass (`vlrt build --token-merge
R`, vlrt/build/passes/tome.py) and the CUDA kernel (kernels/token_merge.cu) are tested against
`merge_tokens` here.

One merge step, on tokens x [B, N, C] with sizes s [B, N] (how many original patches each token
stands for; 1 before the first merge):

1. metric m = x / max(|x|, 1e-6), row-wise L2 (vlrt uses the residual stream after attention as
   the metric; ToMe's paper uses the attention keys averaged over heads);
2. split by position: A = tokens 0, 2, 4, ... (ceil(N/2)), B = tokens 1, 3, 5, ... (floor(N/2));
3. score[a, b] = m_a . m_b; row 0 of A (the class token) gets PROTECTED, so it never merges;
4. each A token's best partner: best[a] = max_b score[a, b], dst[a] = first b reaching it;
5. the r A tokens with the highest best[] merge (ties: the lower index first);
6. merged B tokens become size-weighted means: b' = (s_b b + sum s_a a) / (s_b + sum s_a), and
   their sizes add;
7. output: the A tokens that did not merge, in their original order, then all B tokens in order.
   The class token is A's first token, never merges, and so stays at position 0.

Between merges, attention is proportional (ToMe): log(size) of each key is added to the logits,
so a token standing for k patches weighs as much as k copies of itself.
"""
from __future__ import annotations

import numpy as np

PROTECTED = -10.0  # below any cosine similarity; small enough for fp16


def merge_counts(tokens: int, layers: int, r: int) -> list[int]:
    """Tokens merged at each layer: r, capped so that at least the class token plus one remain
    and never more than A's ceil(N/2) - 1 mergeable tokens."""
    counts, n = [], tokens
    for _ in range(layers):
        k = max(0, min(r, (n + 1) // 2 - 1, n - 2))
        counts.append(k)
        n -= k
    return counts


def merge_tokens(x: np.ndarray, size: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """One merge step: x [B, N, C], size [B, N] -> ([B, N - r, C], [B, N - r]). float64 inside."""
    b, n, c = x.shape
    if not 0 <= r <= (n + 1) // 2 - 1:
        raise ValueError(f"cannot merge {r} of {n} tokens (at most {(n + 1) // 2 - 1})")
    if r == 0:
        return x.copy(), size.copy()
    x64, s64 = x.astype(np.float64), size.astype(np.float64)
    m = x64 / np.maximum(np.linalg.norm(x64, axis=-1, keepdims=True), 1e-6)
    a, bb = m[:, 0::2], m[:, 1::2]
    scores = a @ bb.transpose(0, 2, 1)  # [B, Na, Nb]
    scores[:, 0, :] = PROTECTED
    best = scores.max(axis=-1)
    dst = scores.argmax(axis=-1)  # first maximum
    out_x, out_s = [], []
    for i in range(b):
        order = np.argsort(-best[i], kind="stable")  # descending, ties by lower index
        src = np.sort(order[:r])
        keep = np.sort(order[r:])
        xa, sa = x64[i, 0::2], s64[i, 0::2]
        xb, sb = x64[i, 1::2] * s64[i, 1::2, None], s64[i, 1::2].copy()
        for j in src:
            xb[dst[i, j]] += xa[j] * sa[j]
            sb[dst[i, j]] += sa[j]
        out_x.append(np.concatenate([xa[keep], xb / sb[:, None]]))
        out_s.append(np.concatenate([sa[keep], sb]))
    return np.stack(out_x).astype(x.dtype), np.stack(out_s).astype(size.dtype)
