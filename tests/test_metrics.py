import numpy as np

from vlrt.bench.metrics import ranks, recall_report, top1_agreement


def test_ranks_and_recall():
    scores = np.array([[0.9, 0.1, 0.2],   # query 0: rank 1
                       [0.8, 0.5, 0.1],   # query 1: rank 2
                       [0.9, 0.8, 0.3]])  # query 2: rank 3
    assert ranks(scores).tolist() == [1, 2, 3]
    r = recall_report(scores)
    assert (r["t2v_R@1"], r["t2v_R@5"], r["t2v_median_rank"]) == (33.33, 100.0, 2.0)
    assert ranks(scores.T).tolist() == [1, 2, 1] and r["v2t_R@1"] == 66.67


def test_top1_agreement():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.2]])
    b = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.2]])
    assert top1_agreement(a, b) == 66.67
