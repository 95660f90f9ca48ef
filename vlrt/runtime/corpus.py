"""Embedding a corpus into an index, for `Index.add` (and so `vlrt embed`, a service, a worker).

Paths -> checked files (vlrt.runtime.paths) -> decode, sample, preprocess, encode with decoding
overlapping encoding (vlrt.runtime.pipeline) -> committed shards (vlrt.runtime.index). A file
already embedded is skipped unless its size or mtime changed, then it is embedded again; rows of
deleted files are dropped; every bad path is reported by the name it was given, with the reason,
and the run goes on. errors.jsonl lists each file whose latest attempt failed, whether or not an
older embedding of it is still in the index: a changed file that no longer decodes loses its row,
but a file that can no longer be read (permissions, replaced by a pipe) keeps its older embedding
until it embeds again or is deleted. A file leaves errors.jsonl when it embeds, or when a run
finds it readable and unchanged since it embedded. An index made as part I of N embeds only the
files of its part and drops only the rows of its own deleted files (vlrt.runtime.merge); paths
refused before decoding (missing, unreadable, ...) are reported by every part. Nothing here
prints: progress goes to a callback, the outcome to an `EmbedSummary`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from vlrt.runtime.index import IndexWriter
from vlrt.runtime.merge import in_part, part_label
from vlrt.runtime.paths import Expansion, Source, expand_paths


@dataclasses.dataclass(frozen=True)
class EmbedEvent:
    """Passed to the progress callback at the start (given None) and as each file finishes."""

    total: int  # files this run embeds or reports as failed
    embedded: int  # so far
    failed: int  # so far
    given: str | None = None  # the file that just finished, as given
    error: str | None = None  # its reason, when it failed


@dataclasses.dataclass
class EmbedSummary:
    index: str
    embedded: int = 0  # files embedded by this run
    replaced: int = 0  # of those, files changed (size or mtime) since they were embedded before
    already_indexed: int = 0  # files skipped: embedded before and unchanged
    dropped: int = 0  # rows removed because their file no longer exists
    failed: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"path": as given, "error"}
    total_in_index: int = 0
    seconds: float = 0.0
    engine: dict[str, Any] = dataclasses.field(default_factory=dict)  # what encoded (Runtime.engine_info)
    frames: dict[str, int] | None = None  # with frame skipping: {"sampled", "encoded"}
    part: str | None = None  # "I/N" when the index is part I of N
    other_parts: int = 0  # files found that fall in the other parts, not embedded here

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["seconds"] = round(self.seconds, 3)
        out["videos_per_s"] = round(self.embedded / self.seconds, 3) if self.seconds > 0 else None
        return out


def _deleted(path: str) -> bool:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # unreadable now (permissions, I/O): not known to be gone, keep the row
        return False
    return False


def drop_deleted(writer: IndexWriter, live: dict[str, Any] | None = None, *,
                 part: tuple[int, int] | None = None) -> list[str]:
    """Remove the rows of files that no longer exist (one committed shard); returns their paths.
    `live`: the index's live rows by path, when the caller has scanned them already (updated);
    `part`: only rows of files in that part (a part's index)."""
    live = live if live is not None else {path: entry for path, entry in writer.scan().live.items()}
    gone = [path for path in live if in_part(path, part) and _deleted(path)]
    writer.drop(gone)
    for path in gone:
        del live[path]
    return gone


def _changed(row: dict[str, Any], source: Source) -> bool:
    """Rows from indexes that did not record size and mtime count as unchanged."""
    return "mtime_ns" in row and (row.get("file_size"), row["mtime_ns"]) != (source.size, source.mtime_ns)


def _as_given(error: str, source: Source) -> str:
    """The loader names the resolved path; the user is told the name they gave."""
    if error.startswith(source.path + ":"):
        return source.given + error[len(source.path):]
    return f"{source.given}: {error}"


class _Run:
    """The state of one embedding run: shard buffer, pending drops, counts, progress."""

    def __init__(self, writer: IndexWriter, *, keep_frames: bool, shard_size: int, total: int,
                 progress: Callable[[EmbedEvent], None] | None, live: dict[str, Any]) -> None:
        self.writer, self.keep_frames, self.shard_size = writer, keep_frames, max(1, shard_size)
        self.total, self.progress, self.live = total, progress, live
        self.buffer: list[tuple[Source, Any]] = []
        self.drops: list[str] = []  # stale rows of changed files that now fail
        self.failed: list[dict[str, str]] = []
        self.succeeded = self.committed = self.replaced = 0

    def notify(self, given: str | None = None, error: str | None = None) -> None:
        if self.progress is not None:
            self.progress(EmbedEvent(self.total, self.succeeded, len(self.failed), given, error))

    def fail(self, path: str, given: str, reason: str, *, decoded: bool = False) -> None:
        """`decoded`: the file was in the plan, so if it has a row, the file changed since: the row
        is stale and goes with the next shard."""
        self.failed.append({"path": given, "error": reason})
        self.writer.report_error(path, reason, given=given)
        if decoded and path in self.live:
            self.drops.append(path)
        self.notify(given, reason)

    def succeed(self, source: Source, result: Any) -> None:
        self.buffer.append((source, result))
        self.succeeded += 1
        self.replaced += source.path in self.live
        self.notify(source.given)
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.buffer and not self.drops:
            return
        dim = int(self.writer.meta["embed_dim"])
        emb = np.stack([r.embedding for _, r in self.buffer]) if self.buffer else np.zeros((0, dim), np.float32)
        frames = np.stack([r.frames for _, r in self.buffer]) if self.keep_frames and self.buffer else None
        rows = [{**r.clip.row(), "path": s.path, "file_size": s.size, "mtime_ns": s.mtime_ns}
                for s, r in self.buffer]
        self.writer.append(emb, rows, frames, drop=self.drops)
        self.committed += len(self.buffer)
        self.buffer.clear()
        self.drops.clear()


def own_sources(found: Expansion, part: tuple[int, int] | None) -> int:
    """Keep in `found` only the files of `part` (all: None); returns how many were left out."""
    before = len(found.sources)
    found.sources = [s for s in found.sources if in_part(s.path, part)]
    return before - len(found.sources)


def _plan(sources: list[Source], live: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """(files to embed: new or changed, paths of files embedded before and unchanged)."""
    todo, unchanged = [], []
    for s in sources:
        if s.path in live and not _changed(live[s.path], s):
            unchanged.append(s.path)
        else:
            todo.append(s)
    return todo, unchanged


def embed_into(writer: IndexWriter, runtime: Any, specs: Iterable[str], *, mode: str = "exact",
               keep_frames: bool = False, part: tuple[int, int] | None = None, batch_size: int = 8,
               workers: int = 2, shard_size: int = 64,
               progress: Callable[[EmbedEvent], None] | None = None) -> EmbedSummary:
    """Embed the files `specs` name into the index `writer` writes, with `runtime`; with `part`
    (i, n), only the files of that part. See the module docstring; `Index.add` is the public
    entry point."""
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    t0 = time.perf_counter()
    found = expand_paths(specs)
    other_parts = own_sources(found, part)
    live = {path: row for path, (_, _, row) in writer.scan().live.items()}
    dropped = len(drop_deleted(writer, live, part=part))
    todo, unchanged = _plan(found.sources, live)
    writer.clear_errors(unchanged)  # readable again, and their embedding is current
    run = _Run(writer, keep_frames=keep_frames, shard_size=shard_size, total=len(todo) + len(found.rejected),
               progress=progress, live=live)
    run.notify()
    for bad in found.rejected:
        run.fail(bad.path, bad.given, bad.reason)
    stats = getattr(runtime, "skip_stats", None)
    before = (stats.frames, stats.encoded) if stats is not None else None
    by_path = {s.path: s for s in todo}
    encode = lambda px, mask: runtime.encode_frames(px, mask, return_frames=True)  # noqa: E731
    loader = ClipLoader(runtime.bundle.manifest, mode=mode)
    for result in encode_stream(list(by_path), loader, encode, batch_size=batch_size, workers=workers):
        source = by_path[result.path]
        if result.error:
            run.fail(source.path, source.given, _as_given(result.error, source), decoded=True)
        else:
            run.succeed(source, result)
    run.flush()
    writer.save_errors()
    summary = EmbedSummary(index=str(writer.root), embedded=run.committed, replaced=run.replaced,
                           already_indexed=len(unchanged), dropped=dropped, failed=run.failed,
                           total_in_index=writer.build_faiss(), seconds=time.perf_counter() - t0,
                           engine=runtime.engine_info, part=part_label(part) if part else None,
                           other_parts=other_parts)
    if before is not None:
        summary.frames = {"sampled": stats.frames - before[0], "encoded": stats.encoded - before[1]}
    return summary
