"""Embed videos into an index: decode, sample, preprocess, encode, write shards and a FAISS index.

PATHS are video files, folders (searched recursively for video and image files), glob patterns,
or @LIST files holding one path per line. A path that names nothing to embed (missing, a dangling
link or a symlink loop, a FIFO or device, unreadable, not a video or image, a folder without
videos) or a file that cannot be decoded is reported, by the name given, with the reason; the
rest are embedded. Re-running continues where an interrupted run stopped; a file whose size or
mtime changed is embedded again, rows of deleted files are dropped (--prune: only that), and
errors.jsonl keeps one line per file still failing.

--part I/N embeds only the files that fall in part I of N (0 <= I < N), chosen by a hash of each
file's absolute path: N processes, or N machines that see the videos at the same paths, run the
same command with --part 0/N ... --part N-1/N, each into its own OUTPUT, and `vlrt merge` joins
the parts into one index. The part is recorded: a resumed run must give the same --part. A part
drops only the rows of its own deleted files.

--ray [ADDRESS] runs the same embedding on a Ray cluster (Ray Data; `pip install vlrt[ray]`):
decode tasks on every CPU, --ray-actors encoder actors (one engine each; one GPU each where the
engine runs on CUDA and the cluster has GPUs), one Parquet part per encoder batch under
OUTPUT/ray/, merged by this process into the same shards and rows as without --ray. Without
ADDRESS (or with "local") a local cluster sized to this machine is started and stopped; with
--ray=ADDRESS (e.g. ray://head:10001, or auto on a cluster node) the cluster there is used, and
OUTPUT, the bundle and the videos must be at the same paths on every node. A dead encoder actor
is restarted and its batch retried, with no row lost or added twice; a run whose driver died is
resumed from the parts it left. --ray does not take --skip-similar or --workers (Ray schedules
decoding), nor --prune.
"""
from __future__ import annotations

import argparse
import os

from vlrt.cli.common import Stages, add_backend, add_json, fail, print_json, subcommand
from vlrt.errors import VlrtError


def register(sub) -> None:
    p = subcommand(sub, "embed", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("paths", nargs="*", help="video files, folders, globs or @list files (none with --prune)")
    p.add_argument("-o", "--output", required=True, help="index directory (created, or resumed)")
    add_backend(p)
    p.add_argument("--batch-size", type=int, default=8, help="videos per encoder batch (default 8)")
    p.add_argument("--workers", type=int, help="videos decoded in parallel (default 2; not with --ray)")
    p.add_argument("--mode", choices=["exact", "fast"], default="exact",
                   help="preprocessing: exact (CLIP's PIL pipeline) or fast (resize inside FFmpeg)")
    p.add_argument("--keep-frames", action="store_true", help="also store per-frame embeddings")
    p.add_argument("--frames-dtype", choices=["fp16", "int8"], default="fp16",
                   help="how per-frame records are stored (with --keep-frames, or an X-CLIP/DRL bundle): fp16 "
                        "(default) or int8 (half the bytes; about 1e-3 of score error)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="run the engine `vlrt build` made for this precision (default: fp32, the bundle's graphs)")
    p.add_argument("--engine", metavar="KEY", help="run this built engine (a key under BUNDLE/engines/)")
    p.add_argument("--token-merge", type=int, default=0, metavar="R",
                   help="run the engine built with --token-merge R (opt-in, lossy)")
    p.add_argument("--skip-similar", type=float, metavar="LEVELS",
                   help="encode a sampled frame within LEVELS (mean abs. difference, of 255) of the last encoded "
                        "frame of its video once; e.g. 1.0 for static shots (default: off)")
    p.add_argument("--shard-size", type=int, default=64, help="videos per shard file (default 64)")
    p.add_argument("--part", metavar="I/N", help="embed only part I of N of the files (0 <= I < N; by a hash of "
                   "each file's path) into this index, to be merged with the others by `vlrt merge`; recorded for "
                   "later runs")
    p.add_argument("--ann", choices=["auto", "flat", "hnsw", "ivfpq", "milvus"],
                   help="the vector index search uses: auto (by size: flat below 50k videos, HNSW below 1M, "
                        "IVF-PQ above; the default), or one of them, or milvus: a Milvus collection (pip install "
                        "'vlrt[milvus]'; docs/runtime.md \"Milvus\"); recorded for later runs")
    p.add_argument("--milvus-uri", metavar="URI",
                   help="with --ann milvus: a Milvus server (http://HOST:19530) or a Milvus Lite file (*.db) "
                        "(default: Milvus Lite in OUTPUT/milvus.db)")
    p.add_argument("--milvus-collection", metavar="NAME",
                   help="with --ann milvus: the collection (letters, digits, underscores; default: vlrt_videos in "
                        "OUTPUT/milvus.db, else vlrt_ and a digest of OUTPUT's absolute path)")
    p.add_argument("--prune", action="store_true",
                   help="embed nothing: drop the rows of files that no longer exist and rewrite the shards "
                        "without dead rows")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="embed on a Ray cluster: a local one sized to this machine (no ADDRESS, or 'local'), or "
                        "the cluster at ADDRESS")
    p.add_argument("--ray-actors", type=int, metavar="N",
                   help="encoder actors with --ray (default 1), each holding one engine")
    add_json(p)
    p.set_defaults(func=run)


def _check_ray_options(args: argparse.Namespace) -> None:
    if args.ray is None:
        if args.ray_actors is not None:
            raise VlrtError("--ray-actors sets the encoder actors of a Ray run; add --ray")
        return
    refused = [flag for flag, given in (("--prune", args.prune), ("--skip-similar", args.skip_similar is not None),
                                        ("--workers", args.workers is not None)) if given]
    if refused:
        raise VlrtError(f"--ray does not take {', '.join(refused)}: frame skipping runs without --ray only, Ray "
                        "schedules the decoding itself, and --prune embeds nothing")
    if args.ray != "local" and os.path.exists(args.ray):
        raise VlrtError(f"--ray {args.ray}: that is a path, not a cluster address; put --ray after the paths, "
                        "or write --ray=ADDRESS")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise VlrtError(f"--ray-actors must be >= 1, got {args.ray_actors}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise VlrtError("--ray needs Ray Data: pip install 'vlrt[ray]'") from None


def run(args: argparse.Namespace) -> int:
    stages = Stages()
    _check_ray_options(args)
    if args.prune:
        return _prune(args, stages)
    if not args.paths:
        raise VlrtError("no paths given: name video files, folders, globs or @lists (or pass --prune)")
    from vlrt.runtime.index import Index
    from vlrt.runtime.merge import parse_part, part_label

    part = parse_part(args.part) if args.part is not None else None
    label = part_label(part) if part else None
    stages(f"loading bundle {args.bundle} ...")
    with Index.create(args.output, args.bundle, backend=args.backend, precision=args.precision,
                      engine=args.engine, token_merge=args.token_merge, skip_similar=args.skip_similar,
                      mode=args.mode, keep_frames=args.keep_frames, part=part, ann=args.ann,
                      frames_dtype=args.frames_dtype, milvus_uri=args.milvus_uri,
                      milvus_collection=args.milvus_collection) as index:
        line = index.runtime().engine_line()
        stages(f"encoding with {line}; finding files{f' of part {label}' if part else ''} ...")
        if args.ray is not None:
            from vlrt.runtime.ray_embed import embed_on_ray

            summary = embed_on_ray(index, args.paths, address=args.ray, actors=args.ray_actors or 1,
                                   batch_size=args.batch_size, shard_size=args.shard_size,
                                   progress=_Reporter(quiet=args.json, part=label))
        else:
            summary = index.add(args.paths, batch_size=args.batch_size, workers=args.workers or 2,
                                shard_size=args.shard_size, progress=_Reporter(quiet=args.json, part=label))
    out = summary.as_dict()
    if summary.failed and not summary.embedded and not summary.already_indexed:
        message = f"every one of {len(summary.failed)} files failed; first: {summary.failed[0]['error']}"
        return fail(message, json_mode=args.json, extra=out)
    if args.json:
        print_json(out)
        return 0
    print(f"{args.output}: {f'part {summary.part}: ' if summary.part else ''}"
          f"embedded {summary.embedded} videos in {summary.seconds:.1f}s "
          f"({out['videos_per_s']} videos/s; {summary.replaced} changed since embedded), "
          f"{summary.already_indexed} already indexed, {summary.dropped} deleted files dropped, "
          f"{len(summary.failed)} failed; {summary.total_in_index} in the index")
    print(f"  encoded with {line}")
    if summary.part:
        print(f"  {summary.other_parts} files found fall in the other parts")
    if args.ray is not None:
        print(f"  on Ray: {summary.actors} encoder actors; {summary.encoded} files sent to the cluster, "
              f"{summary.from_parts} merged from an interrupted run's parts")
    if summary.frames is not None:
        f = summary.frames
        print(f"  frames: {f['sampled']} sampled, {f['encoded']} encoded "
              f"({f['sampled'] - f['encoded']} similar to an earlier frame of their video)")
    return 0


class _Reporter:
    """Progress line and one note per failed file, on stderr (the progress line on terminals only)."""

    def __init__(self, *, quiet: bool, part: str | None = None) -> None:
        from vlrt.cli.progress import Progress

        self.quiet = quiet
        self.bar = Progress(0, unit=f"videos of part {part}" if part else "videos", enabled=False if quiet else None)

    def __call__(self, event) -> None:
        self.bar.total = event.total
        if event.given is None:
            return
        if event.error is not None:
            if not self.quiet:
                self.bar.note(f"skipped: {event.error}")
            self.bar.update(failed=1)
        else:
            self.bar.update(done=1)
        if self.bar.done + self.bar.failed == event.total:
            self.bar.close()


def _prune(args: argparse.Namespace, stages: Stages) -> int:
    from vlrt.runtime.index import Index
    from vlrt.runtime.merge import parse_part, part_label, recorded_part

    if args.paths:
        raise VlrtError("--prune embeds nothing, so it takes no paths; run without --prune to embed them")
    stages(f"opening index {args.output} ...")
    with Index.open(args.output, bundle=args.bundle) as index:
        index.bundle_path()  # the bundle named must be the index's: refuses another model's index
        recorded = recorded_part(index.meta)
        if args.part is not None and parse_part(args.part) != recorded:
            raise VlrtError(f"{args.output}: this index is {f'part {part_label(recorded)}' if recorded else 'whole'}, "
                            f"not part {args.part}; --prune keeps to the recorded part: give that, or no --part")
        dropped = index.prune()
    if args.json:
        print_json({"index": args.output, "dropped": dropped, "total_in_index": len(index)})
    else:
        print(f"{args.output}: dropped {dropped} deleted files; {len(index)} in the index")
    return 0
