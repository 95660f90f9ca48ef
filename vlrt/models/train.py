"""Train vlrt's embedded default model on synthetic videos (CPU, minutes, reproducible).

    python -m vlrt.models.train --steps 2900 --out vlrt/assets/default_model.pt.gz

A small CLIP4Clip-style model (ViT + text transformer + seqTransf head) learns from clips that
`vlrt.bench.synth` renders on the fly, with the symmetric InfoNCE loss of CLIP. Every batch pairs each
clip with a "motion twin" (same objects and background, moving the other way or at the other
speed), so the only way to tell their captions apart is how things change from frame to frame:
the temporal head has to learn it. With `--twin-negatives` each moving clip's twin captions
(opposite direction, other speed; training captions only) also join the video->text side of the
loss as extra wrong answers (not part of the shipped model's recipe). Evaluation uses the
held-out test captions (never seen in training).

`--family xclip` trains the multi-grained sibling instead: the same towers and head with X-CLIP's
scorer (its eight matrices start at the identity), the loss taken on the scorer's scores. Its
evaluation reports the scorer's figures and, beside them, the sentence-video dot product alone.

Precision: bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX), fp32
elsewhere: emulated bf16 was 9x slower than fp32 on an AVX2-only CPU (13.7 against 1.45 s/step).
The shipped model took 28.7 minutes in bf16 on two AVX-512 cores; in fp32 on an AVX2-only CPU the
2900 steps take about an hour. The multi-grained sibling was trained with --steps 1200.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlrt.bench import synth
from vlrt.bench.metrics import ranks, recall_report
from vlrt.constants import CLIP_MEAN, CLIP_STD
from vlrt.models import HeadConfig, ModelConfig, ScorerConfig, TextConfig, VideoTextModel, VisionConfig, random_init
from vlrt.models.checkpoint import save_checkpoint
from vlrt.runtime.sampling import segment_middle_indices
from vlrt.runtime.tokenizer import ClipTokenizer

FRAMES, RENDERED, SIZE, WORDS = 8, 16, 64, 20
MEAN = torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1)
STD = torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1)


def model_config(family: str = "clip4clip") -> ModelConfig:
    return ModelConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=SIZE, patch_size=16, width=128, layers=4, heads=2),
        text=TextConfig(context_length=77, vocab_size=49408, width=128, layers=3, heads=2),
        head=HeadConfig(type="seqTransf", layers=2, heads=2, max_positions=16),
        scorer=ScorerConfig("xclip", words=WORDS, frames=FRAMES) if family == "xclip" else None,
    )


SETTINGS = {
    "max_frames": FRAMES,
    "max_words": WORDS,
    "sampling": {"rule": "segment_middle"},
}


def to_pixels(clips: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) float32, normalised as the runtime does."""
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, 3, H, W)
    return (x - MEAN) / STD


def render_batch(items: list[tuple[synth.Scene, int]]) -> np.ndarray:
    """(B, FRAMES, SIZE, SIZE, 3): the frames the runtime's sampler keeps of each RENDERED-frame clip."""
    keep = segment_middle_indices(RENDERED, num_segments=FRAMES)
    return np.stack([synth.render(s, seed=seed, frames=RENDERED, size=SIZE, only=keep) for s, seed in items])


def motion_twin(scene: synth.Scene, names: set[str], other_speed: bool) -> synth.Scene:
    """The same scene at the other speed (if `other_speed` and it moves), else moving the opposite
    way; another way if that caption is held out."""
    options = [scene.with_motion(synth.OPPOSITE[scene.motion]),
               *(scene.with_motion(m) for m in synth.MOTIONS if m != scene.motion)]
    if other_speed and scene.speed:
        options.insert(0, dataclasses.replace(scene, speed=synth.OTHER_SPEED[scene.speed]))
    return next((twin for twin in options if twin.caption in names), scene)


def sample_batch(train: list[synth.Scene], rng: np.random.Generator, batch: int,
                 speed_twins: float = 0.5) -> list[tuple[synth.Scene, int]]:
    """Half random training scenes, half their motion twins, each with a fresh render seed. A
    fraction `speed_twins` of the twins differ in speed, the rest in direction (0.5 draws one
    random bit per twin, the shipped recipe's stream)."""
    names = {s.caption for s in train}
    items = []
    for i in rng.choice(len(train), batch // 2, replace=False):
        other_speed = bool(rng.integers(2)) if speed_twins == 0.5 else bool(rng.random() < speed_twins)
        for scene in (train[i], motion_twin(train[i], names, other_speed=other_speed)):
            items.append((scene, int(rng.integers(2**31))))
    return items


def twin_negatives(items: list[tuple[synth.Scene, int]], names: set[str]) -> list[str]:
    """Captions that no clip of the batch shows but that only time tells apart from one that does:
    each moving clip's opposite direction and other speed, training captions only."""
    shown = {scene.caption for scene, _ in items}
    out: dict[str, None] = {}
    for scene, _ in items:
        if scene.motion == "still":
            continue
        for twin in (scene.with_motion(synth.OPPOSITE[scene.motion]),
                     dataclasses.replace(scene, speed=synth.OTHER_SPEED[scene.speed])):
            if twin.caption in names and twin.caption not in shown:
                out[twin.caption] = None
    return list(out)


def video_outputs(model: VideoTextModel, pixels: torch.Tensor, chunk: int = 64) -> dict[str, torch.Tensor]:
    """The video graph's outputs for clips whose frames are all real, `chunk` clips at a time."""
    parts = [model.video_outputs(pixels[i:i + chunk], torch.ones(len(pixels[i:i + chunk]), pixels.shape[1]))
             for i in range(0, len(pixels), chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def scorer_scores(model: VideoTextModel, video: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
    """(captions, clips) scores of a model with a scorer (X-CLIP) from its graphs' outputs."""
    return model.scorer(text["text_embeds"], text["token_embeds"], video["video_embeds"], video["frame_embeds"])


def clip_loss(model: VideoTextModel, pixels: torch.Tensor, ids: torch.Tensor, captions: list[str],
              negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; `negatives` (K, L): token ids of extra captions that only the
    video->text direction scores, as wrong answers for every clip. A model with a scorer is
    trained on its scores."""
    if model.scorer is not None:
        scale = model.clip.logit_scale.exp().clamp(max=100)
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        t2v = scale * scorer_scores(model, video_outputs(model, pixels), model.text_outputs(ids))  # (B, B)
        return (F.cross_entropy(t2v, target) + F.cross_entropy(t2v.T, target)) / 2
    mask = torch.ones(pixels.shape[:2])
    video, _ = model.encode_video(pixels, mask)  # (B, E)
    text, _ = model.encode_text(ids if negatives is None else torch.cat([ids, negatives]))  # (B + K, E)
    scale = model.clip.logit_scale.exp().clamp(max=100)
    # Identical captions in one batch are positives for each other, not negatives.
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    t2v = scale * text[:len(captions)] @ video.T  # (B, B)
    v2t = scale * video @ text.T  # (B, B + K)
    return (F.cross_entropy(t2v, target) + F.cross_entropy(v2t, F.pad(target, (0, len(text) - len(captions))))) / 2


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def native_bf16() -> bool:
    try:  # a private check (oneDNN's), absent from some builds: then assume emulated bf16
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train(*, steps: int, batch: int, lr: float, seed: int, bf16: bool, log_every: int = 50,
          use_twin_negatives: bool = False, speed_twins: float = 0.5,
          family: str = "clip4clip") -> tuple[VideoTextModel, list[dict]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = random_init(VideoTextModel(model_config(family)), seed=seed).train()
    with torch.no_grad():
        if model.scorer is not None:  # X-CLIP starts its matrices at the identity
            for p in model.scorer.parameters():
                p.copy_(torch.eye(p.shape[0]))
        # Frame positions must be visible next to frame features (norm ~15 here) after the head's
        # LayerNorm, or the head cannot tell frame order, and direction of motion goes unlearned
        # (seen with CLIP4Clip's std 0.02: positions at ~3% of the features' norm, probe at chance).
        model.head.frame_position_embeddings.weight.normal_(0.0, 1.0)
    tok = ClipTokenizer()
    train_scenes = synth.scenes("train")
    names = {s.caption for s in train_scenes}
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    history, t0 = [], time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(100, steps // 10))
        items = sample_batch(train_scenes, rng, batch, speed_twins)
        captions = [s.caption for s, _ in items]
        pixels = to_pixels(render_batch(items))
        pixels = pixels + 0.03 * torch.randn_like(pixels)  # stands in for codec noise
        ids = torch.from_numpy(tok(captions, context_length=WORDS))
        extra = twin_negatives(items, names) if use_twin_negatives else []
        negatives = torch.from_numpy(tok(extra, context_length=WORDS)) if extra else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = clip_loss(model, pixels, ids, captions, negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(history[-1]), flush=True)
    return model.eval(), history


@torch.no_grad()
def evaluate(model: VideoTextModel, *, frames: int = FRAMES, seed: int = 12345) -> dict[str, Any]:
    """Held-out captions, one clip each, rendered frames (no codec); plus direction and speed probes."""
    tok = ClipTokenizer()
    test = synth.scenes("test")
    items = [(s, seed + i) for i, s in enumerate(test)]
    clips = render_batch(items)
    if frames == 1:  # the single-frame baseline: the middle sampled frame only
        clips = clips[:, FRAMES // 2: FRAMES // 2 + 1]
    pixels = to_pixels(clips)
    if model.scorer is None:
        outputs = None
        video = torch.cat([model.encode_video(pixels[i:i + 64], torch.ones(len(pixels[i:i + 64]), pixels.shape[1]))[0]
                           for i in range(0, len(pixels), 64)])
    else:  # the tower runs once: the video vectors come with what the scorer reads
        outputs = video_outputs(model, pixels)
        video = outputs["video_embeds"]
    captions = [s.caption for s in test]
    ids = torch.from_numpy(tok(captions, context_length=WORDS))
    text = model.encode_text(ids)[0]
    single = (text @ video.T).numpy()
    scores = single if model.scorer is None else scorer_scores(model, outputs, model.text_outputs(ids)).numpy()
    report = recall_report(scores)
    moving = [i for i, s in enumerate(test) if s.motion != "still"]
    report["motion_t2v_R@1"] = round(100 * float((ranks(scores)[moving] == 1).mean()), 2)
    for name, twins in synth.probes([test[i] for i in moving]).items():
        clips_out = None if outputs is None else {k: v[moving] for k, v in outputs.items()}
        report[f"{name}_probe_acc"] = probe(model, [test[i].caption for i in moving], twins,
                                            video[moving], clips_out, tok)
    if model.scorer is not None:
        report["single_vector"] = {k: v for k, v in recall_report(single).items() if k.startswith("t2v_R@")}
    report["clips"] = len(test)
    return report


def probe(model, true: list[str], twins: list[str], video: torch.Tensor,
          outputs: dict[str, torch.Tensor] | None, tok) -> float:
    """% of clips scored higher with their caption than with its twin (chance: 50). A model with
    a scorer scores each clip (its video graph's `outputs`) against its own two captions only."""
    true_ids, twin_ids = (torch.from_numpy(tok(c, context_length=WORDS)) for c in (true, twins))
    if model.scorer is not None:
        def pairwise(ids: torch.Tensor) -> torch.Tensor:
            text = model.text_outputs(ids)
            return torch.stack([scorer_scores(model, {k: v[i:i + 1] for k, v in outputs.items()},
                                              {k: v[i:i + 1] for k, v in text.items()})[0, 0] for i in range(len(ids))])
        return round(100 * float((pairwise(true_ids) > pairwise(twin_ids)).float().mean()), 2)
    t = model.encode_text(true_ids)[0]
    f = model.encode_text(twin_ids)[0]
    return round(100 * float(((t * video).sum(1) > (f * video).sum(1)).float().mean()), 2)


def used_token_rows(model: VideoTextModel) -> int:
    """Zero the embedding rows of tokens no caption uses: they were never trained, and zeros
    compress, which keeps the shipped file small. Returns how many rows stay."""
    tok = ClipTokenizer()
    used = {i for s in synth.all_scenes() for i in tok.encode(s.caption)} | {tok.sot_id, tok.eot_id, tok.pad_id}
    weight = model.clip.text.token_embedding.weight
    keep = torch.zeros(weight.shape[0], dtype=torch.bool)
    keep[sorted(used)] = True
    with torch.no_grad():
        weight[~keep] = 0
    return int(keep.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2900)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--twin-negatives", action="store_true",
                   help="add each moving clip's twin captions as extra video->text negatives (not in the shipped "
                        "model's recipe; docs/default_model.md has what it gave)")
    p.add_argument("--speed-twins", type=float, default=0.5,
                   help="fraction of motion twins that differ in speed rather than direction (default 0.5)")
    p.add_argument("--family", choices=["clip4clip", "xclip"], default="clip4clip",
                   help="xclip: the multi-grained sibling (X-CLIP's scorer); default: the shipped default model")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast where the CPU has native bf16, else fp32")
    p.add_argument("--out", help="default: vlrt/assets/default_model.pt.gz, or xclip_model.pt.gz for --family xclip")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16())
    print(f"training in {'bf16 autocast' if bf16 else 'fp32'} on {args.threads} threads", flush=True)
    model, history = train(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, bf16=bf16,
                           use_twin_negatives=args.twin_negatives, speed_twins=args.speed_twins, family=args.family)
    minutes = (time.perf_counter() - t0) / 60
    rows = used_token_rows(model)
    report = {"temporal": evaluate(model)}
    if model.scorer is None:
        report["single_frame_baseline"] = evaluate(model, frames=1)
    out = Path(args.out or f"vlrt/assets/{'default' if args.family == 'clip4clip' else args.family}_model.pt.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out, family=args.family, settings=SETTINGS, half=True)
    recipe = {"command": f"python -m vlrt.models.train --steps {args.steps} --batch {args.batch} --lr {args.lr} "
                         f"--seed {args.seed} --threads {args.threads} --precision {args.precision}"
                         + (" --twin-negatives" if args.twin_negatives else "")
                         + (f" --speed-twins {args.speed_twins}" if args.speed_twins != 0.5 else "")
                         + (f" --family {args.family}" if args.family != "clip4clip" else ""),
              "precision": "bf16" if bf16 else "fp32", "cpu": torch.backends.cpu.get_cpu_capability(),
              "train_minutes": round(minutes, 2), "torch": torch.__version__, "token_rows_kept": rows,
              "config": model.config.to_dict(), "settings": SETTINGS, "eval": report, "history": history}
    out.with_suffix(".json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
