"""Search an index with a text query: the best K videos with their cosine scores."""
from __future__ import annotations

import argparse

from vlrt.cli.common import BACKEND_HELP, add_json, print_json, subcommand


def register(sub) -> None:
    p = subcommand(sub, "search", __doc__)
    p.add_argument("index", help="index directory made by `vlrt embed`")
    p.add_argument("text", help="the query")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda", "tensorrt"],
                   help=BACKEND_HELP)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.runtime.index import Index

    index = Index.open(args.index)
    index.runtime(backend=args.backend)
    hits = index.search(args.text, k=args.k)
    if args.json:
        print_json({"query": args.text, "results": [{"path": p, "score": s} for p, s in hits]})
        return 0
    for rank, (path, score) in enumerate(hits, 1):
        print(f"{rank:3d}  {score:+.4f}  {path}")
    return 0
