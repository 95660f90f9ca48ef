"""The X-CLIP and DRL scorers against loop-by-loop NumPy versions of their published formulas,
and their padding rules: X-CLIP scores every word and frame slot, DRL masks padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlrt.models import ScorerConfig
from vlrt.models.scorers import DrlScorer, XClipScorer


def softmax(x, t=1.0):
    e = np.exp((x - x.max()) / t)
    return e / e.sum()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def xclip_pair(s, w, v, f, m):
    """One caption (s: (E,), w: (W, E)) against one video (v: (E,), f: (F, E)); m: the eight
    matrices. X-CLIP: each similarity vector is pooled by its softmax (temperature 0.01) mixed
    by a learned matrix; the four scores are averaged."""
    t = 0.01

    def pool(sims, mat):
        return float(sims @ (softmax(sims, t) @ mat))

    video_sentence = float(s @ m["global_mat_weight"] @ v)
    video_word = pool(w @ v, m["word_logit_weight"])
    sentence_frame = pool(f @ s, m["frame_logit_weight"])
    fine = (w @ m["local_mat_weight"]) @ f.T  # (W, F)
    per_frame = np.array([pool(fine[:, j], m["word_mat_weight"]) for j in range(fine.shape[1])])
    per_word = np.array([pool(fine[i, :], m["frame_mat_weight"]) for i in range(fine.shape[0])])
    frame_word = (pool(per_frame, m["frame_mat_weight2"]) + pool(per_word, m["word_mat_weight2"])) / 2
    return (video_sentence + video_word + sentence_frame + frame_word) / 4


def drl_pair(w, wt, f, fw):
    """DRL wti for one pair: words' best frame weighted by word weights, frames' best word
    weighted by frame weights, averaged (padding: zero vectors, zero weight)."""
    sims = w @ f.T  # (L, T)
    return float((sims.max(1) * wt).sum() + (sims.max(0) * fw).sum()) / 2


@pytest.fixture
def xclip():
    torch.manual_seed(0)
    scorer = XClipScorer(ScorerConfig("xclip", words=5, frames=4), embed_dim=8)
    with torch.no_grad():
        for p in scorer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return scorer


def test_xclip_scorer_equals_the_formulas(xclip):
    rng = np.random.default_rng(0)
    s, w = unit(rng.standard_normal((3, 8))), unit(rng.standard_normal((3, 5, 8)))
    v, f = unit(rng.standard_normal((4, 8))), unit(rng.standard_normal((4, 4, 8)))
    got = xclip(*(torch.tensor(a, dtype=torch.float32) for a in (s, w, v, f))).detach().numpy()
    mats = {name: getattr(xclip, name).detach().numpy().astype(np.float64) for name, _ in XClipScorer.MATRICES}
    want = np.array([[xclip_pair(s[q], w[q], v[n], f[n], mats) for n in range(4)] for q in range(3)])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_xclip_scores_padded_slots(xclip):
    """X-CLIP masks nothing in its scorer: a padded word's or frame's features change the score."""
    rng = np.random.default_rng(1)
    args = [torch.tensor(unit(rng.standard_normal(shape)), dtype=torch.float32)
            for shape in ((1, 8), (1, 5, 8), (1, 8), (1, 4, 8))]
    base = xclip(*args)
    for which in (1, 3):  # the last word slot, the last frame slot
        changed = [a.clone() for a in args]
        changed[which][0, -1] = torch.tensor(unit(rng.standard_normal(8)), dtype=torch.float32)
        assert not torch.allclose(xclip(*changed), base)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_drl_scorer_equals_the_formula_and_masks_padding(layers):
    torch.manual_seed(layers)
    scorer = DrlScorer(ScorerConfig("drl", weight_layers=layers), embed_dim=8)
    ids = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 2368, 49407, 0, 0, 0]])
    tokens, sentence = torch.randn(2, 6, 8), torch.randn(2, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    frames = torch.randn(3, 5, 8)
    with torch.no_grad():
        text = scorer.text_outputs(sentence, tokens, ids)
        video = scorer.video_outputs(frames, frames, mask)
        got = scorer(text["token_embeds"], text["token_weights"], video["frame_embeds"], video["frame_weights"]).numpy()
    tw, fw = text["token_weights"].numpy(), video["frame_weights"].numpy()
    assert np.all(tw[0, 4:] == 0) and np.all(tw[1, 3:] == 0) and np.all(fw[0, 3:] == 0) and np.all(fw[2, 1:] == 0)
    np.testing.assert_allclose(tw.sum(1), 1, atol=1e-6)
    if layers == 0:  # DRL's "ti": the plain mean over real words and frames
        np.testing.assert_allclose(tw[1, :3], 1 / 3, atol=1e-7)
    w, f = text["token_embeds"].numpy(), video["frame_embeds"].numpy()
    want = np.array([[drl_pair(w[q], tw[q], f[n], fw[n]) for n in range(3)] for q in range(2)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # padded slots are zero vectors: whatever the encoder computed there does not count
    noisy = frames.clone()
    noisy[0, 3:] += 5.0
    with torch.no_grad():
        again = scorer.video_outputs(noisy, noisy, mask)
        moved = scorer(text["token_embeds"], text["token_weights"], again["frame_embeds"], again["frame_weights"])
    np.testing.assert_allclose(moved.numpy(), got, atol=1e-6)
