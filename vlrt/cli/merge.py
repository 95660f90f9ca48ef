"""Merge indexes built in parts (`vlrt embed ... --part I/N`) into one index.

PARTS are index directories made by `vlrt embed`, typically with --part 0/N ... --part N-1/N;
OUTPUT is a new index, or an existing one to add them to (a later merge can add more parts).
Every part and OUTPUT must share the bundle, the engine and the encoding options (--mode,
--skip-similar, --keep-frames, --frames-dtype); --part may differ, and the merged index records
none, so `vlrt embed` adds to it without --part. A part that a run is still writing is refused.

The live rows are copied as stored (embeddings and per-frame records, fp16 or int8, never
converted). A file in more than one part keeps the row of the last part given, and a part's row
replaces OUTPUT's row of the same file; a row already in OUTPUT as it is is not copied again, so
re-running an interrupted merge completes it. errors.jsonl gains the parts' errors of files with
no row in the result. The vector index (--ann, as OUTPUT or else the first part recorded it) is
built once, at the end.
"""
from __future__ import annotations

import argparse

from vlrt.cli.common import Stages, add_json, print_json, subcommand


def register(sub) -> None:
    p = subcommand(sub, "merge", __doc__)
    p.add_argument("parts", nargs="+", metavar="PART", help="index directories to merge, in order (the last wins)")
    p.add_argument("-o", "--output", required=True, help="index directory (created, or added to)")
    p.add_argument("--bundle", metavar="DIR", help="the bundle to record in a new OUTPUT (default: the first part's)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.runtime.merge import merge

    stages = Stages()
    stages(f"merging {len(args.parts)} parts into {args.output} ...")
    summary = merge(args.output, args.parts, bundle=args.bundle, progress=_Reporter(quiet=args.json))
    if args.json:
        print_json(summary.as_dict())
        return 0
    print(f"{args.output}: merged {len(summary.parts)} parts in {summary.seconds:.1f}s: {summary.copied} rows "
          f"copied, {summary.unchanged} already in the index, {summary.replaced} of its rows replaced; "
          f"{summary.errors} files in errors.jsonl; {summary.total_in_index} in the index")
    for part in summary.parts:
        label = f"part {part['part']}, " if part["part"] else ""
        print(f"  {part['path']}: {label}{part['live']} videos")
    if summary.duplicates:
        print(f"  {summary.duplicates} files are in more than one part: each keeps the row of the last part given")
    if summary.missing_parts:
        print(f"  note: part {', '.join(summary.missing_parts)} not among the parts given")
    return 0


class _Reporter:
    """Progress line of the rows copied, on stderr (on terminals only)."""

    def __init__(self, *, quiet: bool) -> None:
        from vlrt.cli.progress import Progress

        self.bar = Progress(0, unit="rows", enabled=False if quiet else None)

    def __call__(self, event) -> None:
        self.bar.total = event.total
        if not event.total:
            return
        self.bar.update(done=event.copied - self.bar.done)
        if event.copied == event.total:
            self.bar.close()
