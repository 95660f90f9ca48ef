"""`vlrt build --auto`: every engine this machine's CPU backends offer, measured here; the fastest
that holds the quality gate becomes the bundle's default on this machine.

Candidates come from the backend registry: each available CPU backend's precisions and int8
modes (static int8 only with calibration videos), its int8 fallbacks (OpenVINO: the ops int8
leaves unquantized computed in bf16, on CPUs with native bf16), with and without the structural
passes it accepts (attention fusion; token merging only when asked, since it is lossy), and fp32
on the bundle's own graphs. Each is built as `vlrt build` builds it (cosine gate >= 0.99 per embedding
on the validation feeds), then all are timed on the same frames, interleaved round by round
(each round times every candidate once; the median round counts), through `Runtime` itself, so
what is timed is what will run (packed frames included). With a labelled gallery, a candidate
whose text->video or video->text Recall@1 falls more than 0.5 point below fp32 on ONNX Runtime
is refused too (a multi-grained model's Recall@1 is its scorer's, over its per-frame records).

The record, every candidate's figures included, goes to BUNDLE/engines/auto.json, one entry
per machine (CPU model and ISA flags); `Runtime.load(bundle)` with no backend, precision or
engine named, and `Runtime.load(bundle, engine="auto")`, use this machine's entry.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime import backends
from vlrt.runtime.bundle import AUTO_FILE, ENGINES, Bundle, machine_fingerprint

MAX_GALLERY_BYTES = 1 << 30  # preprocessed gallery frames kept in memory for the Recall@1 gate
GATE_BATCH_SIZES = (1, 8, 16)  # the gallery is encoded in batches of each size; the worst Recall@1 counts
RECALL_BUDGET = 0.5  # points of Recall@1 a candidate may lose against fp32 on a labelled gallery
REFERENCE = "ort-cpu fp32"


@dataclasses.dataclass
class Candidate:
    name: str
    backend: str
    settings: dict[str, Any]  # build_engine keywords: precision, int8_mode, fuse_attention, token_merge
    status: str = "pending"  # "chosen", "passed", or why it was refused or not built
    key: str | None = None  # None: the bundle's own graphs
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "precision": self.settings.get("precision", "fp32"),
                "settings": self.settings, "key": self.key, "status": self.status, **self.figures}


def candidates(*, calib: str | Path | None, token_merge: Sequence[int] = (),
               only: Sequence[str] | None = None) -> list[Candidate]:
    """What `--auto` tries here; those it cannot try carry the reason as their status."""
    out = []
    for name in backends.names():
        spec = backends.get(name)
        if spec.device != "cpu" or spec.needs_engine or (only and name not in only):
            continue
        for precision in spec.precisions:
            for mode in (spec.int8_modes if precision == "int8" else (None,)):
                base = {"precision": precision, **({"int8_mode": mode} if mode else {})}
                label = f"{name} {precision}" + (f" {mode}" if mode else "")
                variants = [(label, base)]
                if "fuse-attention" in spec.structural_passes and mode != "static":
                    variants.append((label + " + fused attention", {**base, "fuse_attention": True}))
                if precision == "int8":
                    variants += [(label + f" + {f} fallback", {**base, "int8_fallback": f}) for f in spec.int8_fallbacks]
                if "token-merge" in spec.structural_passes:
                    variants += [(label + f" + token merge {r}", {**base, "token_merge": r}) for r in token_merge]
                for vname, settings in variants:
                    cand = Candidate(vname, name, settings)
                    if not spec.available():
                        cand.status = f"not installed: {_reason(spec.require)}"
                    elif mode == "static" and calib is None:
                        cand.status = "needs calibration videos (--calib DIR)"
                    out.append(cand)
    return out


def build_auto(bundle_dir: str | Path, *, calib: str | Path | None = None,
               gallery: tuple[Sequence[str], Sequence[str]] | None = None, token_merge: Sequence[int] = (),
               only: Sequence[str] | None = None, threads: int | None = None, rounds: int = 5, batch: int = 4,
               progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Build, measure and choose (see the module docstring); returns the entry written to
    BUNDLE/engines/auto.json. `gallery`: (video files, their captions) for the Recall@1 gate;
    `only`: backend names to consider."""
    from vlrt.build.engine import build_engine, calibration_videos

    bundle = Bundle.open(bundle_dir)
    cands = candidates(calib=calib, token_merge=token_merge, only=only)
    if not any(c.status == "pending" for c in cands):
        raise VlrtError("no candidate engine can be built here: " + "; ".join(f"{c.name}: {c.status}" for c in cands))
    runtimes: dict[str, Any] = {}
    for cand in cands:
        if cand.status != "pending":
            continue
        progress(f"candidate {cand.name}")
        settings = {**cand.settings, **({"calib": calib} if cand.settings.get("int8_mode") == "static" else {})}
        t0 = time.perf_counter()
        try:
            built = build_engine(bundle.root, backend=cand.backend, progress=progress, **settings)
            cand.key = built.key
            runtimes[cand.name] = candidate_runtime(bundle, cand, threads)
        except VlrtError as exc:
            cand.status = f"refused: {exc}"
            continue
        cand.figures["build_s"] = round(time.perf_counter() - t0, 2)
        if built.reused:
            cand.figures["reused"] = True  # built before with the same key: build_s is the reuse's
        if built.key is not None:
            cand.figures["validation_min_cosine"] = built.manifest["validation"]["min_cosine"]
    reference = runtimes.get(REFERENCE) or candidate_runtime(bundle, Candidate(REFERENCE, "ort-cpu", {"precision": "fp32"}),
                                                    threads)
    pixels, mask = timing_frames(bundle, calibration_videos(Path(calib)) if calib else [], batch)
    progress(f"timing {len(runtimes)} candidates, {rounds} interleaved rounds")
    medians = time_interleaved({name: (lambda rt=rt: rt.encode_frames(pixels, mask, batch_size=len(pixels)))
                                for name, rt in runtimes.items()}, rounds)
    expected = reference.encode_frames(pixels, mask)
    for cand in cands:
        if cand.name in runtimes:
            got = runtimes[cand.name].encode_frames(pixels, mask)
            cand.figures["timing_min_cosine"] = round(float((got * expected).sum(1).min()), 6)
            cand.figures["frames_per_s"] = round(float(mask.sum()) / medians[cand.name], 2)
    used = _recall_gate(bundle, cands, runtimes, reference, gallery, progress) if gallery is not None else 0
    passed = [c for c in cands if c.name in runtimes and c.status == "pending"]
    for c in passed:
        c.status = "passed"
    chosen = max(passed, key=lambda c: c.figures["frames_per_s"], default=None)
    if chosen is None:
        raise VlrtError("no candidate passed the quality gate: "
                        + "; ".join(f"{c.name}: {c.status}" for c in cands))
    chosen.status = "chosen"
    entry = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "machine": machine_fingerprint(), "source": {"manifest_sha256": bundle.manifest_sha256},
             "choice": {"name": chosen.name, "backend": chosen.backend,
                        "precision": chosen.settings["precision"], "key": chosen.key},
             "measure": {"threads": threads, "rounds": rounds,
                         "frames": f"{pixels.shape[0]} videos x {mask.shape[1]} frames",
                         "source": "calibration videos" if calib else "random pixels",
                         "gallery_videos": used, "recall_budget": RECALL_BUDGET,
                         "reference": REFERENCE},
             "candidates": [c.record() for c in cands]}
    write_auto_entry(bundle, entry)
    return entry


def write_auto_entry(bundle: Bundle, entry: dict[str, Any]) -> Path:
    """Replace this machine's entry in BUNDLE/engines/auto.json (other machines' stay)."""
    path = bundle.root / ENGINES / AUTO_FILE
    entries = bundle.auto_entries()
    entries = [e for e in entries if e.get("machine") != entry["machine"]] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"entries": entries}, indent=2) + "\n")
    tmp.replace(path)
    return path


def candidate_runtime(bundle: Bundle, cand: Candidate, threads: int | None):
    from vlrt import Runtime

    spec = backends.get(cand.backend)
    engine = bundle.engine(backend=cand.backend, key=cand.key) if cand.key else None
    return Runtime(bundle, backend=spec, threads=threads, engine=engine)


def timing_frames(bundle: Bundle, videos: list[Path], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` calibration videos, sampled and preprocessed, every frame slot filled (a clip's
    frames repeated where it has fewer): candidates are compared on equal work, whether or not
    they pack frames. Random pixels without videos."""
    from vlrt.runtime.pipeline import ClipLoader

    clips = []
    loader = ClipLoader(bundle.manifest)
    for path in videos:
        try:
            clip = loader(path)
        except VlrtError:
            continue
        clips.append(clip.pixels[np.arange(bundle.max_frames) % clip.n_frames])
        if len(clips) == batch:
            break
    if clips:
        return np.stack(clips), np.ones((len(clips), bundle.max_frames), np.float32)
    size, frames = bundle.image_size, bundle.max_frames
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, frames, 3, size, size), dtype=np.float32),
            np.ones((batch, frames), np.float32))


def time_interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call over `rounds` rounds, each round calling every one once, after one
    warm-up round: load from elsewhere on the machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds + 1):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if r:
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in samples.items()}


def _recall_gate(bundle: Bundle, cands: list[Candidate], runtimes: dict[str, Any], reference: Any,
                 gallery: tuple[Sequence[str], Sequence[str]], progress: Callable[[str], None]) -> int:
    """Refuse candidates whose Recall@1 on the gallery falls more than RECALL_BUDGET below the
    reference's. The gallery is decoded once (evenly thinned to fit MAX_GALLERY_BYTES); returns
    the number of videos used."""
    from vlrt.bench.metrics import recall_report
    from vlrt.runtime.pipeline import ClipLoader, stack_clips

    paths, captions = list(gallery[0]), list(gallery[1])
    if len(paths) != len(captions) or not paths:
        raise VlrtError(f"gallery: {len(paths)} videos and {len(captions)} captions; one caption per video, at least one")
    per_video = 4 * bundle.max_frames * 3 * bundle.image_size ** 2
    if len(paths) * per_video > MAX_GALLERY_BYTES:
        keep = np.linspace(0, len(paths) - 1, max(2, MAX_GALLERY_BYTES // per_video)).round().astype(int)
        paths, captions = [paths[i] for i in keep], [captions[i] for i in keep]
    progress(f"decoding the gallery ({len(paths)} videos)")
    loader = ClipLoader(bundle.manifest)
    pixels, mask = stack_clips([loader(p) for p in paths])

    def scores(rt, size: int) -> np.ndarray:
        """(captions, videos) scores: dot products, or a multi-grained model's scorer."""
        if not rt.multi_vector:
            return rt.encode_text(captions) @ rt.encode_frames(pixels, mask, batch_size=size).T
        video, record = rt.encode_frames(pixels, mask, batch_size=size, return_frames=True)
        return rt.score(rt.encode_text_outputs(captions),
                        {rt.bundle.outputs("video")[0]: video, **rt.split_frame_record(record)})

    def recall(rt) -> dict[str, float]:
        """The worst Recall@1 over GATE_BATCH_SIZES: dynamic int8 scales activations per batch, so
        the same video embeds slightly differently in another batch, enough to flip a near tie."""
        reports = [recall_report(scores(rt, size)) for size in GATE_BATCH_SIZES]
        return {k: min(r[k] for r in reports) for k in ("t2v_R@1", "v2t_R@1")}

    want = recall(reference)
    for cand in cands:
        if cand.name not in runtimes:
            continue
        progress(f"gallery Recall@1: {cand.name}")
        got = cand.figures["recall"] = recall(runtimes[cand.name])
        drop = max(want[k] - got[k] for k in want)
        if drop > RECALL_BUDGET:
            cand.status = (f"refused: Recall@1 {drop:.2f} points below {REFERENCE} on the gallery "
                           f"(budget {RECALL_BUDGET})")
    return len(paths)


def _reason(require: Callable[[], None]) -> str:
    try:
        require()
    except VlrtError as exc:
        return str(exc)
    return "unavailable"
