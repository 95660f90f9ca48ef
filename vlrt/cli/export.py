"""Export a checkpoint to a parity-checked bundle (ONNX graphs + vlrt.json).

Reads OpenAI CLIP (TorchScript archive or state dict), open_clip (.pt/.safetensors), Hugging Face
CLIPModel directories, CLIP4Clip pytorch_model.bin.N and vlrt checkpoints; detects format, family,
temporal head and geometry; traces the video and text encoders to ONNX; checks ONNX Runtime
against PyTorch (min cosine >= 0.99999 per embedding) and fails if the check fails.
"""
from __future__ import annotations

import argparse
import sys

from vlrt.cli.common import Stages, add_json, print_json, subcommand
from vlrt.errors import VlrtError


def register(sub) -> None:
    p = subcommand(sub, "export", __doc__)
    p.add_argument("checkpoint", help="checkpoint file or Hugging Face model directory")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--format", choices=["vlrt", "clip4clip", "hf", "openai", "open_clip"],
                   help="checkpoint format (default: detected from the file)")
    p.add_argument("--family", choices=["clip", "clip4clip"],
                   help="model family, which sets the defaults below (default: detected)")
    p.add_argument("--frames", type=int, help="max frames per video (default: the family's, 12)")
    p.add_argument("--words", type=int,
                   help="max tokens per caption incl. start/end (default: 32 for clip4clip, the context length for clip)")
    p.add_argument("--activation", choices=["quick_gelu", "gelu"],
                   help="MLP activation, for open_clip files without a config, whose weights do not say which "
                        "(default: quick_gelu, OpenAI's, with a warning; pass gelu for LAION-trained weights)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling: can run arbitrary code from the file; only for files you trust")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from vlrt.export import export_checkpoint
    except ImportError as exc:  # a deployment install: no torch (or onnx)
        raise VlrtError(f"`vlrt export` traces the PyTorch model and needs the export extra ({exc.name or exc} is "
                        "missing): pip install 'vlrt[export]'") from None

    stages = Stages()
    result = export_checkpoint(
        args.checkpoint, args.output, overwrite=args.force, progress=stages,
        format=args.format, family=args.family, activation=args.activation,
        max_frames=args.frames, max_words=args.words, trust_pickle=args.trust_pickle,
    )
    m = result.manifest
    if args.json:
        print_json({"bundle": str(result.bundle), "format": m["source"]["format"], "family": m["family"],
                    "head": m["head"], "validation": m["validation"], "seconds": result.seconds,
                    "warnings": result.warnings})
        return 0
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    model = m["model"]
    print(f"{result.bundle}: {m['source']['format']} checkpoint, family {m['family']}, head {m['head']}, "
          f"ViT {model['vision']['width']}w/{model['vision']['layers']}L patch {model['vision']['patch_size']} "
          f"@{model['vision']['image_size']}px, embed {m['embed_dim']}, activation {m['activation']} "
          f"({m['activation_source']}), {m['max_frames']} frames, {m['max_words']} words")
    print("\n".join(result.report.lines()))
    total = sum(result.seconds.values())
    print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()) + f", total {total:.1f}s")
    return 0
