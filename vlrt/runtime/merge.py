"""Building one index in parts: which files part I of N embeds, and merging the parts.

`vlrt embed ... --part I/N` (`Index.create(..., part=(i, n))`) embeds only the files whose path, as
the index records it (absolute, symlinks resolved), falls in part I: the sha256 of the path, read
as a number, modulo N. The split depends on the path alone, so N processes, or N machines that
see the videos at the same paths, given the same PATHS each embed a disjoint share into an index
directory of their own, and every file falls in exactly one part. The part is recorded with the
encoding options (index.json: "encoder": {"part": "I/N", ...}), so resuming a part with another
part, or with none, is refused. A part drops only the rows of its own deleted files.

`merge(out, parts)` (`vlrt merge PART... -o INDEX`) copies the live rows of the parts into INDEX,
a new or an existing index:

- Every part, and INDEX when it exists, must have the same bundle manifest, embedding size,
  encoder record (engine key, preprocessing mode, frame skipping, per-frame records and their
  dtype; not the part) and engine record (backend, precision, engine key and options; not
  whether the tower ran on packed frames, which gives the same embeddings).
- Each part's write lock is held while it is read, so a part still being written is refused.
- Rows are copied as stored: float32 video embeddings and fp16, or int8 with their fp16 scales
  and scalars, per-frame records, never converted; at most `shard_rows` rows are read at a time,
  and each output shard holds up to that many.
- A path live in more than one part keeps the row of the last part given, and a part's row
  replaces INDEX's row of the same path: one live row per path. A winning row already live in
  INDEX as it is (the same record: path, file size and mtime, what the decoder saw) is not
  copied again, so re-running a merge that was interrupted completes it, and re-running a
  finished one copies nothing. A merge adds and replaces rows; it removes none.
- errors.jsonl keeps INDEX's errors of files it has no new row for, and gains the parts' errors
  of files with no live row in the result (the last part's line winning).
- The merged index records no part (`vlrt embed` adds to it without --part), and its vector
  index is built once, at the end, of the kind INDEX recorded (a new INDEX: the first part's).

An interrupted merge leaves INDEX with complete shards only (vlrt/runtime/index.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import operator
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime import milvus
from vlrt.runtime.index import (
    INDEX_META,
    INT8_EXTRA,
    INT8_SCALE,
    IndexWriter,
    Scan,
    _describe,
    _write_json,
    _WriterLock,
    find_bundle,
    kept_frames,
    read_errors,
    read_meta,
    scan,
)

SHARD_ROWS = 4096  # rows read at a time and written to one shard: 58 MB at D=512 with T=12 fp16 frames


def check_part(part: Sequence[int]) -> tuple[int, int]:
    """(i, n), or VlrtError when it names no part: n >= 1 parts, numbered 0 to n - 1."""
    try:
        i, n = (operator.index(x) for x in part)
    except (TypeError, ValueError):
        raise VlrtError(f"part {part!r}: give (i, n), part i of n, e.g. (0, 2) and (1, 2)") from None
    if n < 1:
        raise VlrtError(f"part {i}/{n}: the number of parts must be at least 1")
    if not 0 <= i < n:
        raise VlrtError(f"part {i}/{n}: parts are numbered from 0 to {n - 1} (0/{n} ... {n - 1}/{n})")
    return i, n


def parse_part(text: str) -> tuple[int, int]:
    """"I/N", as `vlrt embed --part` takes it and index.json records it -> (i, n)."""
    i, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        part = int(i), int(n)
    except ValueError:
        raise VlrtError(f"part {text!r}: give I/N, part I of N, e.g. 0/2 and 1/2 for two parts") from None
    return check_part(part)


def part_label(part: tuple[int, int]) -> str:
    return f"{part[0]}/{part[1]}"


def recorded_part(meta: dict[str, Any]) -> tuple[int, int] | None:
    """The part an index records (index.json's encoder record), or None: a whole index."""
    label = (meta.get("encoder") or {}).get("part")
    return parse_part(label) if label else None


def in_part(path: str, part: tuple[int, int] | None) -> bool:
    """Whether `path`, as an index records it, falls in `part` (every path is in part None)."""
    if part is None:
        return True
    return int.from_bytes(hashlib.sha256(os.fsencode(path)).digest(), "big") % part[1] == part[0]


@dataclasses.dataclass(frozen=True)
class MergeEvent:
    """Passed to the progress callback at the start and after each shard written."""

    total: int  # rows this merge copies
    copied: int  # so far


@dataclasses.dataclass
class MergeSummary:
    index: str
    parts: list[dict[str, Any]]  # per part, in the order given: {"path", "part": "I/N" or None, "live": rows}
    copied: int = 0  # rows written to the index
    unchanged: int = 0  # rows already live in the index as they are: not copied again
    duplicates: int = 0  # paths live in more than one part: the last part's row kept
    replaced: int = 0  # paths whose row in the index a part's row replaced
    missing_parts: list[str] = dataclasses.field(default_factory=list)  # "I/N" not given, when all given are of N
    errors: int = 0  # files in errors.jsonl
    total_in_index: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclasses.dataclass
class _Part:
    root: Path
    meta: dict[str, Any]
    scan: Scan
    lock: _WriterLock


def _open_part(root: Path, out: Path) -> _Part:
    if not (root / INDEX_META).is_file():
        raise VlrtError(f"{root}: not a vlrt index (no {INDEX_META}); give index directories made by `vlrt embed`")
    if os.path.realpath(root) == os.path.realpath(out):
        raise VlrtError(f"{root} is the output index too; merge the other parts into it, not itself")
    try:
        lock = _WriterLock(root)
    except VlrtError as exc:
        raise VlrtError(f"{exc}; a part is merged once no run writes it (merging holds its write lock)") from None
    return _Part(root, read_meta(root), scan(root), lock)


def _identity(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What must agree between the indexes merged."""
    encoder = {k: v for k, v in (meta.get("encoder") or {}).items() if k != "part"}
    encoder.setdefault("keep_frames", kept_frames(root, meta))  # an index made before it was recorded
    return {"bundle": meta["bundle_manifest_sha256"], "embed_dim": int(meta["embed_dim"]), "encoder": encoder,
            "engine": {k: v for k, v in (meta.get("engine") or {}).items() if k != "packed"}}


def _check_same(root: Path, meta: dict[str, Any], ref_root: Path, ref: dict[str, Any]) -> None:
    mine = _identity(root, meta)
    if mine["bundle"] != ref["bundle"]:
        raise VlrtError(f"{root} was embedded with another bundle than {ref_root} (manifest sha256 "
                        f"{mine['bundle'][:16]}..., not {ref['bundle'][:16]}...); only indexes of one bundle merge")
    if mine["embed_dim"] != ref["embed_dim"]:
        raise VlrtError(f"{root} holds {mine['embed_dim']}-d embeddings, {ref_root} {ref['embed_dim']}-d; "
                        "only indexes of one bundle merge")
    for what, name in (("encoder", "encoding options"), ("engine", "engine record")):
        if mine[what] != ref[what]:
            keys = sorted(k for k in mine[what].keys() | ref[what].keys() if mine[what].get(k) != ref[what].get(k))
            diff = ", ".join(f"{k}={mine[what].get(k)} against {ref[what].get(k)}" for k in keys)
            raise VlrtError(f"{root} was embedded with other {name} than {ref_root} ({diff}; all: "
                            f"{_describe(mine[what])}); merge only parts embedded with the same options")


def _bundle_for(out_exists: bool, bundle: str | Path | None, first: _Part, out: Path) -> str | Path | None:
    """The bundle to record in INDEX: the one given (checked), none for an existing INDEX (its
    record stays), else the first part's."""
    if bundle is not None:
        return find_bundle(first.root, first.meta, bundle)
    if out_exists:
        return None
    try:
        return find_bundle(first.root, first.meta)
    except VlrtError:
        raise VlrtError(f"{first.root}: the bundle it was embedded with is not where it recorded it, and the new "
                        f"index {out} records its bundle; give it: `vlrt merge ... --bundle DIR` "
                        "(merge(..., bundle=DIR))") from None


def _missing_parts(parts: list[_Part]) -> list[str]:
    given = [recorded_part(p.meta) for p in parts]
    counts = {g[1] for g in given if g is not None}
    if None in given or len(counts) != 1:
        return []
    n = counts.pop()
    return [part_label((i, n)) for i in range(n) if (i, n) not in given]


class _Output:
    """Rows read from the parts, written as shards of at most `limit` rows."""

    def __init__(self, writer: IndexWriter, limit: int, total: int, progress: Callable[[MergeEvent], None] | None):
        self.writer, self.limit, self.total, self.progress = writer, limit, total, progress
        self.pieces: list[dict[str, np.ndarray]] = []
        self.rows: list[dict[str, Any]] = []
        self.copied = 0

    def add(self, stored: dict[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        if self.rows and len(self.rows) + len(rows) > self.limit:
            self.flush()
        self.pieces.append(stored)
        self.rows.extend(rows)

    def flush(self) -> None:
        if not self.rows:
            return
        stored = {suffix: np.concatenate([p[suffix] for p in self.pieces]) for suffix in self.pieces[0]}
        self.writer.commit_shard(stored, self.rows)
        self.copied += len(self.rows)
        self.pieces, self.rows = [], []
        if self.progress is not None:
            self.progress(MergeEvent(self.total, self.copied))


def _copy(part: _Part, picks: dict[int, list[tuple[int, dict[str, Any]]]], out: _Output,
          suffixes: list[str]) -> None:
    """Copy the rows `picks` (shard position -> [(row in the shard, its record)]) of `part` as
    they are stored."""
    shards = part.root / "shards"
    for i in sorted(picks):
        stem, rows = part.scan.stems[i], sorted(picks[i], key=lambda pick: pick[0])
        arrays = {}
        for suffix in suffixes:
            try:
                arrays[suffix] = np.load(shards / f"{stem}{suffix}", mmap_mode="r")
            except FileNotFoundError:
                raise VlrtError(f"{part.root}: shard {stem} has no {stem}{suffix}, which this index's other shards "
                                "and records say it has; the index is damaged") from None
            if len(arrays[suffix]) != part.scan.counts[i]:
                raise VlrtError(f"{part.root}: shard {stem} holds {len(arrays[suffix])} entries in {stem}{suffix} but "
                                f"{part.scan.counts[i]} metadata rows; the index is damaged")
        for a in range(0, len(rows), out.limit):
            chunk = rows[a:a + out.limit]
            sel = [j for j, _ in chunk]
            out.add({s: np.asarray(arr[sel]) for s, arr in arrays.items()}, [row for _, row in chunk])


def _suffixes(part: _Part, picks: dict[int, Any], ident: dict[str, Any]) -> list[str]:
    """The stored arrays of each row: the embedding, and the per-frame records when kept (for
    int8, with scales, and scalars when the model has them)."""
    encoder = ident["encoder"]
    if not encoder["keep_frames"]:
        return [".npy"]
    if encoder.get("frames_dtype") != "int8":
        return [".npy", ".frames.npy"]
    first = part.scan.stems[min(picks)]
    extra = (part.root / "shards" / f"{first}{INT8_EXTRA}").is_file()  # every shard alike: one model
    return [".npy", ".frames.npy", INT8_SCALE] + ([INT8_EXTRA] if extra else [])


def merge(out: str | Path, parts: Sequence[str | Path], *, bundle: str | Path | None = None,
          shard_rows: int = SHARD_ROWS, progress: Callable[[MergeEvent], None] | None = None) -> MergeSummary:
    """Merge the indexes `parts` into the index `out` (new, or existing) and return a
    `MergeSummary`; see the module docstring. `bundle`: record this bundle in `out` (by default
    the first part's, for a new `out`; an existing one keeps its own). `progress(MergeEvent)` is
    called as shards are written. Nothing here prints."""
    t0 = time.perf_counter()
    out = Path(out)
    roots = [Path(p) for p in parts]
    if not roots:
        raise VlrtError("no parts given: name the index directories to merge")
    real = [os.path.realpath(r) for r in roots]
    if len(set(real)) != len(real):
        twice = next(r for r, p in zip(roots, real) if real.count(p) > 1)
        raise VlrtError(f"{twice} is given twice; give each part once")
    if shard_rows < 1:
        raise VlrtError(f"shard_rows must be >= 1, got {shard_rows}")
    opened: list[_Part] = []
    writer: IndexWriter | None = None
    try:
        for root in roots:
            opened.append(_open_part(root, out))
        first = opened[0]
        out_exists = (out / INDEX_META).is_file()
        ref_root, ref_meta = (out, read_meta(out)) if out_exists else (first.root, first.meta)
        ref = _identity(ref_root, ref_meta)
        for part in opened:
            _check_same(part.root, part.meta, ref_root, ref)
        writer = _writer(out, out_exists, first, ref, _bundle_for(out_exists, bundle, first, out))
        summary = _merge_rows(writer, opened, ref, shard_rows, progress)
    finally:
        for part in opened:
            part.lock.release()
        if writer is not None:
            writer.close()
    summary.missing_parts = _missing_parts(opened)
    summary.seconds = time.perf_counter() - t0
    return summary


def _writer(out: Path, out_exists: bool, first: _Part, ref: dict[str, Any],
            bundle: str | Path | None) -> IndexWriter:
    """The writer of `out`, whose record names no part (a part merged into holds all the rows now)."""
    meta = first.meta
    if not out_exists:
        encoder = {k: v for k, v in (meta.get("encoder") or {}).items() if k != "part"} if "encoder" in meta else None
        ann = meta.get("ann") or {}
        # a Milvus server carries over (the merged index gets its own collection); a Lite store is per index
        server = ann.get("uri") if ann.get("requested") == "milvus" and milvus.is_server(ann.get("uri", "")) else None
        return IndexWriter(out, bundle=bundle, manifest_sha256=ref["bundle"], embed_dim=ref["embed_dim"],
                           encoder=encoder, engine=meta.get("engine"), ann=ann.get("requested"), milvus_uri=server)
    writer = IndexWriter(out, bundle=bundle, manifest_sha256=ref["bundle"], embed_dim=ref["embed_dim"])
    encoder = writer.meta.get("encoder")
    if encoder is not None and "part" in encoder:
        writer.meta["encoder"] = {k: v for k, v in encoder.items() if k != "part"}
        _write_json(out / INDEX_META, writer.meta)
    return writer


def _merge_rows(writer: IndexWriter, parts: list[_Part], ident: dict[str, Any], shard_rows: int,
                progress: Callable[[MergeEvent], None] | None) -> MergeSummary:
    owners = Counter(path for part in parts for path in part.scan.live)
    winners = {path: k for k, part in enumerate(parts) for path in part.scan.live}  # the last part wins
    existing = writer.scan().live
    picks: list[dict[int, list[tuple[int, dict[str, Any]]]]] = [{} for _ in parts]
    summary = MergeSummary(index=str(writer.root), duplicates=sum(n > 1 for n in owners.values()),
                           parts=[{"path": str(p.root), "part": (p.meta.get("encoder") or {}).get("part"),
                                   "live": len(p.scan.live)} for p in parts])
    for path, k in winners.items():
        i, j, row = parts[k].scan.live[path]
        if path in existing and existing[path][2] == row:
            summary.unchanged += 1
            continue
        summary.replaced += path in existing
        picks[k].setdefault(i, []).append((j, row))
    output = _Output(writer, shard_rows, sum(len(r) for p in picks for r in p.values()), progress)
    if progress is not None:
        progress(MergeEvent(output.total, 0))
    for part, chosen in zip(parts, picks):
        if chosen:
            _copy(part, chosen, output, _suffixes(part, chosen, ident))
    output.flush()
    summary.copied = output.copied
    live = writer.scan().live
    for part in parts:
        writer.errors.update((p, e) for p, e in read_errors(part.root).items() if p not in live)
    summary.errors = writer.save_errors()
    summary.total_in_index = writer.build_faiss()
    return summary
