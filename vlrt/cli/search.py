"""Search an index with a text query: the best K videos with their scores (cosines, or a multi-grained model's own).

The query is encoded by the engine the videos were embedded with (recorded in the index), so an
index embedded with an int8 engine is queried through that engine's text graph; --backend,
--precision or --engine choose another. The bundle is found where the index recorded it
(relative to the index, then absolute); --bundle DIR when it moved.

--frames K scores a video by its K frames that best match the query instead of its video
embedding (query-time frame selection; the index must keep per-frame embeddings: `vlrt embed
--keep-frames`); --rerank N applies it to the N best videos by video embedding only.

An index of a multi-grained model (X-CLIP, DRL) is searched with the model's own scorer over
per-word and per-frame features: over every video, or with --rerank N over the N best by video
embedding (a two-stage search: FAISS first, the scorer on the candidates).
"""
from __future__ import annotations

import argparse
import sys

from vlrt.cli.common import Stages, add_backend, add_json, print_json, subcommand
from vlrt.errors import VlrtError


def register(sub) -> None:
    p = subcommand(sub, "search", __doc__)
    p.add_argument("index", help="index directory made by `vlrt embed`")
    p.add_argument("text", help="the query")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--frames", type=int, metavar="K", help="score each video by the mean cosine of its K frames "
                   "that best match the query (frame selection; an index embedded with --keep-frames)")
    p.add_argument("--rerank", type=int, metavar="N", help="with --frames, or a multi-grained model's index: "
                   "rescore only the N best by video embedding (two-stage search; default: every video)")
    p.add_argument("--bundle", metavar="DIR", help="the index's bundle, when it is no longer where the index says")
    add_backend(p, help="default: the backend of the engine the videos were embedded with")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="encode the query with this precision's engine instead (fp32: the bundle's graphs)")
    p.add_argument("--engine", metavar="KEY", help="encode the query with this built engine instead")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.runtime.index import Index

    if not args.text.strip():
        raise VlrtError("the query is empty: give the text to search for")
    stages = Stages()
    stages(f"opening index {args.index} ...")
    index = Index.open(args.index, bundle=args.bundle)
    stages(f"loading bundle {index.bundle_path()} ...")
    rt = index.runtime(backend=args.backend, precision=args.precision, engine=args.engine)
    info = rt.engine_info
    if info["engine"] != index.engine["engine"]:
        print(f"vlrt: note: the videos were embedded with {index.engine['engine'] or 'the fp32 graphs'}; "
              f"the query is encoded with {info['engine'] or 'the fp32 graphs'}", file=sys.stderr)
    hits = index.search(args.text, k=args.k, frames=args.frames, rerank=args.rerank)
    if args.json:
        print_json({"query": args.text, "engine": info,
                    "results": [{"path": p, "score": s} for p, s in hits]})
        return 0
    print(f"query encoded with {rt.engine_line()}")
    for rank, (path, score) in enumerate(hits, 1):
        print(f"{rank:3d}  {score:+.4f}  {path}")
    return 0
