"""Embed videos into an index: decode, sample, preprocess, encode, write shards and a FAISS index.

PATHS are video files, folders (searched recursively for video and image files), glob patterns,
or @LIST files holding one path per line. A video that cannot be decoded is reported (file and
reason) and skipped; the rest are embedded. Re-running the same command after an interruption
continues where it stopped: every video ends up in the index exactly once.
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

from vlrt.cli.common import BACKEND_HELP, add_json, print_json, subcommand
from vlrt.errors import VlrtError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg",
                  ".flv", ".wmv", ".3gp", ".gif", ".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def register(sub) -> None:
    p = subcommand(sub, "embed", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("paths", nargs="+", help="video files, folders, globs or @list files")
    p.add_argument("-o", "--output", required=True, help="index directory (created, or resumed)")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda", "tensorrt"],
                   help=BACKEND_HELP)
    p.add_argument("--batch-size", type=int, default=8, help="videos per encoder batch (default 8)")
    p.add_argument("--workers", type=int, default=2, help="videos decoded in parallel (default 2)")
    p.add_argument("--mode", choices=["exact", "fast"], default="exact",
                   help="preprocessing: exact (CLIP's PIL pipeline) or fast (resize inside FFmpeg)")
    p.add_argument("--keep-frames", action="store_true", help="also store per-frame embeddings")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="run the engine `vlrt build` made for this precision (default: fp32, the bundle's graphs)")
    p.add_argument("--engine", metavar="KEY", help="run this built engine (a key under BUNDLE/engines/)")
    p.add_argument("--token-merge", type=int, default=0, metavar="R",
                   help="run the engine built with --token-merge R (opt-in, lossy)")
    p.add_argument("--skip-similar", type=float, metavar="LEVELS",
                   help="encode a sampled frame within LEVELS (mean abs. difference, of 255) of the last encoded "
                        "frame of its video once; e.g. 1.0 for static shots (default: off)")
    p.add_argument("--shard-size", type=int, default=64, help="videos per shard file (default 64)")
    add_json(p)
    p.set_defaults(func=run)


def expand_paths(specs: list[str]) -> list[str]:
    """Files, folders, globs and @lists -> unique absolute file paths, in a stable order."""
    out: dict[str, None] = {}
    for spec in specs:
        if spec.startswith("@"):
            lines = Path(spec[1:]).read_text().splitlines()
            items = [Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
        elif any(ch in spec for ch in "*?["):
            items = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        else:
            items = [Path(spec)]
        for item in items:
            if item.is_dir():
                files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            else:
                files = [item]  # a missing file is reported per file, not fatal for the rest
            out.update((str(f.resolve()), None) for f in files)
    return list(out)


def run(args: argparse.Namespace) -> int:
    from vlrt.cli.progress import Progress
    from vlrt.runtime.index import IndexWriter
    from vlrt.runtime.pipeline import ClipLoader, encode_stream
    from vlrt.runtime.bundle import MANIFEST, sha256_file
    from vlrt.runtime.runtime import Runtime

    rt = Runtime.load(args.bundle, backend=args.backend, precision=args.precision, engine=args.engine,
                      token_merge=args.token_merge, skip_similar=args.skip_similar)
    encoder = {"engine": rt.engine.key if rt.engine else None, "skip_similar": args.skip_similar, "mode": args.mode}
    writer = IndexWriter(args.output, bundle=Path(args.bundle), embed_dim=rt.embed_dim,
                         manifest_sha256=sha256_file(Path(args.bundle) / MANIFEST), encoder=encoder)
    paths = expand_paths(args.paths)
    if not paths:
        raise VlrtError(f"no files found in {' '.join(args.paths)}")
    done = writer.done_paths()
    todo = [p for p in paths if p not in done]
    progress = Progress(len(todo), enabled=None if not args.json else False)
    failures, buffer, embedded, t0 = [], [], 0, time.perf_counter()
    encode = lambda px, mask: rt.encode_frames(px, mask, return_frames=True)  # noqa: E731
    for result in encode_stream(todo, ClipLoader(rt.bundle.manifest, mode=args.mode), encode,
                                batch_size=args.batch_size, workers=args.workers):
        if result.error:
            failures.append({"path": result.path, "error": result.error})
            writer.report_error(result.path, result.error)
            if not args.json:
                progress.note(f"skipped: {result.error}")
            progress.update(failed=1)
            continue
        buffer.append(result)
        progress.update(done=1)
        if len(buffer) >= args.shard_size:
            embedded += _flush(writer, buffer, args.keep_frames)
    embedded += _flush(writer, buffer, args.keep_frames)
    progress.close()
    total = writer.build_faiss()
    seconds = time.perf_counter() - t0
    summary = {"index": args.output, "embedded": embedded, "already_indexed": len(paths) - len(todo),
               "failed": failures, "total_in_index": total, "seconds": round(seconds, 3),
               "videos_per_s": round(embedded / seconds, 3) if seconds > 0 else None,
               "engine": rt.engine.key if rt.engine else None}
    if rt.skip_stats is not None:
        summary["frames"] = {"sampled": rt.skip_stats.frames, "encoded": rt.skip_stats.encoded}
    if args.json:
        print_json(summary)
    else:
        print(f"{args.output}: embedded {embedded} videos in {seconds:.1f}s ({summary['videos_per_s']} videos/s), "
              f"{summary['already_indexed']} already indexed, {len(failures)} failed; {total} in the index")
        if rt.skip_stats is not None:
            print(f"  frames: {rt.skip_stats.frames} sampled, {rt.skip_stats.encoded} encoded "
                  f"({rt.skip_stats.skipped} similar to an earlier frame of their video)")
    if failures and not embedded and not done:
        raise VlrtError(f"every one of {len(failures)} files failed; first: {failures[0]['error']}")
    return 0


def _flush(writer, buffer: list, keep_frames: bool) -> int:
    import numpy as np

    if not buffer:
        return 0
    emb = np.stack([r.embedding for r in buffer])  # (n, D)
    frames = np.stack([r.frames for r in buffer]) if keep_frames else None  # (n, T, D)
    writer.append(emb, [r.clip.row() for r in buffer], frames)
    n = len(buffer)
    buffer.clear()
    return n
