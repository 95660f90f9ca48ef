"""`export_checkpoint`: checkpoint -> parity-checked bundle, the whole of `vlrt export`."""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlrt.build.staging import staging_dir
from vlrt.errors import VlrtError
from vlrt.export.bundle import write_manifest
from vlrt.export.load import LoadedCheckpoint, load_checkpoint
from vlrt.export.onnx import OPSET, export_onnx
from vlrt.export.validate import Report, validate
from vlrt.runtime.bundle import SCHEMA_VERSION
from vlrt.runtime.tokenizer import ClipTokenizer


@dataclasses.dataclass
class ExportResult:
    bundle: Path
    manifest: dict[str, Any]
    report: Report
    warnings: list[str]
    seconds: dict[str, float]


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda message: None,
    **load_options: Any,
) -> ExportResult:
    """Load, trace, validate and write a bundle; raises VlrtError if the parity gate fails.

    `load_options` go to `load_checkpoint` (format, family, activation, max_frames, max_words,
    trust_pickle).
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(f"loading {checkpoint}")
    ckpt = load_checkpoint(checkpoint, **load_options)
    seconds["load"] = time.perf_counter() - t0
    with staging_dir(Path(out), overwrite=overwrite) as tmp:
        t0 = time.perf_counter()
        progress(f"tracing {ckpt.format} {ckpt.config.head.type} model to ONNX (opset {OPSET})")
        specs, scorer = export_onnx(ckpt.model, ckpt.family, tmp, frames=ckpt.max_frames, words=ckpt.max_words)
        tokenizer = ClipTokenizer()
        shutil.copyfile(tokenizer.vocab_path, tmp / tokenizer.vocab_path.name)
        seconds["onnx"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        progress("checking ONNX Runtime against PyTorch")
        graphs = {name: tmp / spec.file for name, spec in specs.items()}
        report = validate(ckpt.model, graphs, frames=ckpt.max_frames, words=ckpt.max_words,
                          threshold=ckpt.family.min_cosine,
                          scorer=(scorer, tmp / scorer.file, ckpt.family.max_score_diff) if scorer else None)
        seconds["validate"] = time.perf_counter() - t0
        if not report.passed:
            raise VlrtError("export failed its parity gate: " + " | ".join(report.lines()))
        manifest = write_manifest(tmp, _manifest(ckpt, specs, scorer, report, tokenizer))
    return ExportResult(Path(out), manifest, report, ckpt.warnings, seconds)


def _manifest(ckpt: LoadedCheckpoint, specs, scorer, report: Report, tokenizer: ClipTokenizer) -> dict[str, Any]:
    cfg = ckpt.config
    return {
        "schema_version": SCHEMA_VERSION,
        "source": {"path": str(ckpt.source), "format": ckpt.format},
        **ckpt.family.manifest_fields(),
        "head": cfg.head.type,
        "model": cfg.to_dict(),
        "activation": cfg.activation,
        "activation_source": ckpt.activation_source,
        "embed_dim": cfg.embed_dim,
        "max_frames": ckpt.max_frames,
        "max_words": ckpt.max_words,
        "sampling": {**ckpt.sampling, "max_frames": ckpt.max_frames},
        "preprocessing": ckpt.preprocessing,
        "tokenizer": {
            "type": ckpt.family.tokenizer, "file": tokenizer.vocab_path.name, "sha256": tokenizer.vocab_sha256,
            "context_length": ckpt.max_words, "sot": tokenizer.sot_id, "eot": tokenizer.eot_id,
            "pad": tokenizer.pad_id,
        },
        "logit_scale": float(ckpt.model.clip.logit_scale.exp().item()),
        "precision": "fp32",
        "passes": [],
        "opset": OPSET,
        "graphs": {name: spec.to_manifest() for name, spec in specs.items()},
        **({"scorer": scorer.to_manifest()} if scorer else {}),
        "validation": report.to_dict(),
        "warnings": ckpt.warnings,
    }
