"""Retrieval metrics over a (queries x gallery) score matrix whose diagonal holds the true pairs."""
from __future__ import annotations

import numpy as np


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of the diagonal entry in each row (ties counted in its favour)."""
    return (scores > np.diag(scores)[:, None]).sum(1) + 1


def recall_report(scores: np.ndarray) -> dict[str, float]:
    """Text->video (rows are captions) and video->text Recall@1/5/10 (%) and median rank."""
    out: dict[str, float] = {}
    for name, s in (("t2v", scores), ("v2t", scores.T)):
        r = ranks(s)
        out.update({f"{name}_R@{k}": round(100 * float((r <= k).mean()), 2) for k in (1, 5, 10)})
        out[f"{name}_median_rank"] = float(np.median(r))
    return out


def top1_agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """% of queries whose best gallery item is the same under both score matrices."""
    return round(100 * float((scores.argmax(1) == reference.argmax(1)).mean()), 2)
