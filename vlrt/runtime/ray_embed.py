"""Embedding a corpus into an index on a Ray cluster (Ray Data), for `vlrt embed --ray`.

The driver plans as `Index.add` does (vlrt.runtime.corpus: path expansion, only the files of the
index's part when it is one, skipping files embedded before and unchanged, dropping rows of
deleted files), then runs one Ray Data pipeline over the files left:

    file list ─► decode tasks (CPU: `ClipLoader`, one video per block)
              ─► an actor pool of encoders (one `Runtime` per actor, made once; one GPU each where
                 the engine runs on CUDA and the cluster has GPUs)
              ─► one Parquet part per encoder batch, INDEX/ray/part-<digest>.parquet, written by the
                 actor (temporary name, then rename): per file its size, mtime, embedding, per-frame
                 record, the decoder's row and the engine key, or its decode error
              ─► the driver merges each part as it is reported, through the index's `IndexWriter`,
                 into the same shards and rows `vlrt embed` writes, then builds the FAISS index.

INDEX must be on a filesystem that every node of the cluster and the driver mount at the same
path, and every node needs vlrt and the bundle at the same path as the driver.

Fault tolerance: encoder actors are restarted when their process dies (`max_restarts=-1`) and the
batch in flight is retried on the new actor (`max_task_retries`); a retried batch writes the part
of the same name again. The driver merges a path once per run, so a part reported twice adds no
row. A run whose driver died leaves its parts: the next run merges the parts that hold files
still to embed (same size, mtime and engine) and encodes only the rest. Parts are deleted once a
run has merged everything. Decode failures become error rows and errors.jsonl lines exactly as
`vlrt embed` records them; they are tried again by every run.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.corpus import EmbedEvent, EmbedSummary, _as_given, _plan, _Run, drop_deleted, own_sources
from vlrt.runtime.merge import part_label
from vlrt.runtime.paths import Source, expand_paths

PARTS = "ray"  # INDEX/ray/: the Parquet parts of runs not yet fully merged
PART_PREFIX = "part-"


@dataclasses.dataclass
class RayEmbedSummary(EmbedSummary):
    """`EmbedSummary`, plus where the rows came from and what the cluster's stages were busy with."""

    encoded: int = 0  # files encoded by this run's actors (embedded or failed to decode)
    from_parts: int = 0  # files merged from parts an earlier, interrupted run left
    duplicates: int = 0  # part rows not merged because their path was merged already in this run
    actors: int = 0
    stages: dict[str, Any] = dataclasses.field(default_factory=dict)  # busy seconds per stage, from the workers


@dataclasses.dataclass
class _Clip:
    """What `_Run` reads of a merged file: the decoder's row."""

    meta: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return dict(self.meta)


@dataclasses.dataclass
class _Merged:
    embedding: np.ndarray
    frames: np.ndarray
    clip: _Clip


@functools.lru_cache(maxsize=4)
def _loader(manifest_json: str, mode: str):
    from vlrt.runtime.pipeline import ClipLoader

    return ClipLoader(json.loads(manifest_json), mode=mode)


def decode_row(item: dict[str, Any], *, manifest_json: str, mode: str) -> dict[str, Any]:
    """One file -> its preprocessed frames as bytes (T, 3, S, S float32) and the decoder's row, or
    the error `vlrt embed` reports for it. A Ray Data `map` function (a CPU task)."""
    from vlrt.runtime.pipeline import collect

    t0 = time.perf_counter()
    future: cf.Future = cf.Future()
    try:
        future.set_result(_loader(manifest_json, mode)(item["path"]))
    except Exception as exc:  # collect() words it as the local pipeline does
        future.set_exception(exc)
    result = collect(item["path"], future)
    out = {"path": item["path"], "file_size": int(item["file_size"]), "mtime_ns": int(item["mtime_ns"]),
           "pixels": b"", "n_frames": 0, "meta": "", "error": result.error or "", "decode_pid": os.getpid()}
    if result.clip is not None:
        clip = result.clip
        out.update(pixels=np.ascontiguousarray(clip.pixels, np.float32).tobytes(), n_frames=clip.n_frames,
                   meta=json.dumps(clip.row()))
    out["decode_s"] = time.perf_counter() - t0
    return out


def part_name(paths: Iterable[str], sizes: Iterable[int], mtimes: Iterable[int]) -> str:
    """The part a batch of files is written to: named by a digest of the files and their versions,
    so a retried batch replaces its own part."""
    key = "\n".join(sorted(f"{p}\0{s}\0{m}" for p, s, m in zip(paths, sizes, mtimes)))
    return f"{PART_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"


class Encoder:
    """A Ray Data actor: one `Runtime`, made once; each batch of decoded files -> one Parquet part
    under `parts`, reported to the driver as one row (part name, rows)."""

    def __init__(self, bundle: str, *, backend: str | None, engine: str | None, threads: int | None,
                 parts: str) -> None:
        from vlrt.runtime.runtime import Runtime

        self.rt = Runtime.load(bundle, backend=backend, engine=engine, threads=threads)
        self.engine_key = self.rt.engine_info["engine"]
        from vlrt.runtime.pipeline import ClipLoader

        loader = ClipLoader(self.rt.bundle.manifest)
        self.frames, self.side = loader.max_frames, loader.pre.size
        self.parts = Path(parts)
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from vlrt.runtime.pipeline import prefix_mask

        t0 = time.perf_counter()
        n = len(batch["path"])
        ok = [i for i in range(n) if not batch["error"][i]]
        embeddings: dict[int, bytes] = {}
        records: dict[int, bytes] = {}
        width = 0
        if ok:
            shape = (self.frames, 3, self.side, self.side)
            pixels = np.stack([np.frombuffer(batch["pixels"][i], np.float32).reshape(shape) for i in ok])
            mask = prefix_mask([int(batch["n_frames"][i]) for i in ok], self.frames)
            video, frames = self.rt.encode_frames(pixels, mask, return_frames=True)  # (B, D), (B, T, R)
            width = frames.shape[-1]
            for j, i in enumerate(ok):
                embeddings[i] = np.ascontiguousarray(video[j], np.float32).tobytes()
                records[i] = np.ascontiguousarray(frames[j], np.float32).tobytes()
        encode_s = time.perf_counter() - t0
        paths = [str(p) for p in batch["path"]]
        sizes = [int(s) for s in batch["file_size"]]
        mtimes = [int(m) for m in batch["mtime_ns"]]
        table = pa.table({
            "path": paths, "file_size": pa.array(sizes, pa.int64()), "mtime_ns": pa.array(mtimes, pa.int64()),
            "error": [str(e) or None for e in batch["error"]],
            "meta": [str(m) or None for m in batch["meta"]],
            "embedding": pa.array([embeddings.get(i) for i in range(n)], pa.binary()),
            "frames": pa.array([records.get(i) for i in range(n)], pa.binary()),
            "frame_shape": pa.array([[self.frames, width] if i in embeddings else None for i in range(n)],
                                    pa.list_(pa.int32())),
            "engine": [self.engine_key] * n,
            "decode_s": pa.array([float(s) for s in batch["decode_s"]], pa.float64()),
            "decode_pid": pa.array([int(p) for p in batch["decode_pid"]], pa.int64()),
            "encode_s": pa.array([encode_s] * n, pa.float64()),
            "encode_pid": pa.array([self.pid] * n, pa.int64()),
        })
        name = part_name(paths, sizes, mtimes)
        self.parts.mkdir(parents=True, exist_ok=True)
        tmp = self.parts / f".{name}.{self.pid}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.parts / name)  # the part exists whole, or not at all
        return {"part": np.array([name]), "rows": np.array([n]), "encode_s": np.array([encode_s]),
                "encode_pid": np.array([self.pid])}


def read_part(path: Path) -> list[dict[str, Any]]:
    """A part's rows as dicts, embeddings and per-frame records decoded."""
    import pyarrow.parquet as pq

    out = []
    for row in pq.read_table(path).to_pylist():
        if row["embedding"] is not None:
            t, width = row["frame_shape"]
            row["embedding"] = np.frombuffer(row["embedding"], np.float32)
            row["frames"] = np.frombuffer(row["frames"], np.float32).reshape(t, width)
        out.append(row)
    return out


def _parts(root: Path) -> list[Path]:
    folder = root / PARTS
    return sorted(folder.glob(f"{PART_PREFIX}*.parquet")) if folder.is_dir() else []


class _Stages:
    """Busy time per stage and per worker process, summed from the parts' rows."""

    def __init__(self) -> None:
        self.decode_s = 0.0
        self.decode_files = 0
        self.encode: dict[str, float] = {}  # part -> seconds (a batch counted once)
        self.encode_by_pid: dict[int, float] = {}
        self.decode_by_pid: dict[int, float] = {}
        self.merge_s = 0.0  # the driver's: reading parts, committing shards

    def add(self, part: str, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.decode_s += r["decode_s"]
            self.decode_files += 1
            self.decode_by_pid[r["decode_pid"]] = self.decode_by_pid.get(r["decode_pid"], 0.0) + r["decode_s"]
        if rows and part not in self.encode:
            self.encode[part] = rows[0]["encode_s"]
            pid = rows[0]["encode_pid"]
            self.encode_by_pid[pid] = self.encode_by_pid.get(pid, 0.0) + rows[0]["encode_s"]

    def as_dict(self, wall: float) -> dict[str, Any]:
        encode_s = sum(self.encode.values())
        return {"wall_s": round(wall, 3), "decode_busy_s": round(self.decode_s, 3), "decode_files": self.decode_files,
                "decode_processes": len(self.decode_by_pid), "encode_busy_s": round(encode_s, 3),
                "encode_batches": len(self.encode), "encode_processes": len(self.encode_by_pid),
                "merge_s": round(self.merge_s, 3),
                "encode_busy_s_by_process": {str(pid): round(v, 3) for pid, v in self.encode_by_pid.items()}}


def _connect(address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at `address`, or start a local one ("local", None) sized to this machine;
    nothing when this process is connected already. True when this call connected."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise VlrtError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    return True


def _resources(actors: int, device: str) -> dict[str, Any]:
    """Per encoder actor: one GPU where the engine runs on CUDA and the cluster has GPUs; else a
    share of the CPUs that leaves at least one for decoding."""
    import ray

    res = ray.cluster_resources()
    if device == "cuda" and res.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    cpus = float(res.get("CPU", 1))
    share = min(1.0, max(0.25, (cpus - 1) / max(1, actors)))
    return {"num_cpus": share}


def embed_on_ray(index, paths: Iterable[str], *, address: str | None = None, actors: int = 1, batch_size: int = 8,
                 shard_size: int = 64, num_cpus: int | None = None, threads: int | None = None,
                 task_retries: int = 3, progress: Callable[[EmbedEvent], None] | None = None,
                 on_block: Callable[[str, int], None] | None = None) -> RayEmbedSummary:
    """Embed the files `paths` names into `index` (an `Index` made by `Index.create`, holding its
    write lock) on Ray; see the module docstring. `address`: a cluster's address, or None/"local"
    for a local cluster of `num_cpus` (default: this machine's); a process already connected to
    Ray uses that connection. `actors`: encoder actors; `threads`: inference threads per actor
    (default: its CPU share, at least 1); `task_retries`: how often a batch whose actor died is
    tried again. `progress` gets `EmbedEvent`s as `Index.add` sends them; `on_block(part, rows)`
    is called after each merged part. The index then holds the same rows as `Index.add` makes."""
    from vlrt.runtime import backends

    t0 = time.perf_counter()
    if actors < 1 or batch_size < 1:
        raise VlrtError(f"actors and batch_size must be >= 1, got {actors} and {batch_size}")
    writer = index._writer_for_add()
    rt = index._runtime_for_add()
    if rt.skip_similar is not None:
        raise VlrtError("frame skipping (--skip-similar) is not supported on Ray: embed without --ray")
    options = index._embed_options
    mode, keep_frames = options["mode"], options["keep_frames"]
    info = rt.engine_info
    engine_key = info["engine"]

    part = options.get("part")
    found = expand_paths(paths)
    other_parts = own_sources(found, part)
    live = {path: row for path, (_, _, row) in writer.scan().live.items()}
    dropped = len(drop_deleted(writer, live, part=part))
    todo, unchanged = _plan(found.sources, live)
    writer.clear_errors(unchanged)
    run = _Run(writer, keep_frames=keep_frames, shard_size=shard_size, total=len(todo) + len(found.rejected),
               progress=progress, live=live)
    run.notify()
    for bad in found.rejected:
        run.fail(bad.path, bad.given, bad.reason)
    by_path = {s.path: s for s in todo}
    merged: set[str] = set()
    stages = _Stages()
    summary = RayEmbedSummary(index=str(writer.root), actors=actors, engine=info,
                              part=part_label(part) if part else None, other_parts=other_parts)

    def merge(part: str, rows: list[dict[str, Any]]) -> None:
        taken = []
        for row in rows:
            source = by_path.get(row["path"])
            if source is None or row["path"] in merged:
                summary.duplicates += source is not None
                continue
            if row["engine"] != engine_key:
                raise VlrtError(f"{part}: encoded with engine {row['engine']}, not this index's {engine_key}; "
                                "every node must run the index's engine")
            merged.add(row["path"])
            taken.append(row)
            if row["error"]:
                run.fail(source.path, source.given, _as_given(row["error"], source), decoded=True)
            else:
                run.succeed(source, _Merged(row["embedding"], row["frames"], _Clip(json.loads(row["meta"]))))
        stages.add(part, taken)
        if on_block is not None:
            on_block(part, len(taken))

    root = Path(writer.root)
    # parts an interrupted run left: the files they hold at the same version are not encoded again
    for path in _parts(root):
        try:
            rows = read_part(path)
        except Exception:  # a damaged part: its files are encoded again
            continue
        usable = [r for r in rows if not r["error"] and r["engine"] == engine_key and r["path"] in by_path
                  and (by_path[r["path"]].size, by_path[r["path"]].mtime_ns) == (r["file_size"], r["mtime_ns"])]
        if usable:
            before = len(merged)
            merge(path.name, usable)
            summary.from_parts += len(merged) - before

    rest = [s for s in todo if s.path not in merged]
    summary.encoded = len(rest)
    if rest:
        import ray

        connected = _connect(address, num_cpus)
        try:
            ds = _dataset(rest, rt, root, mode=mode, actors=actors, batch_size=batch_size, threads=threads,
                          task_retries=task_retries, device=backends.get(rt.backend).device,
                          bundle=str(Path(rt.bundle.root).resolve()), engine_key=engine_key)
            stream = ds.iter_rows()
            try:
                for reported in stream:
                    name = str(reported["part"])
                    t_merge = time.perf_counter()
                    merge(name, read_part(root / PARTS / name))
                    stages.merge_s += time.perf_counter() - t_merge
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        finally:
            if connected:
                ray.shutdown()
    run.flush()
    writer.save_errors()
    missing = [s.given for s in rest if s.path not in merged]
    if missing:
        raise VlrtError(f"the Ray pipeline finished without {len(missing)} files (first: {missing[0]}); "
                        "run again to embed them")
    for path in _parts(root):
        path.unlink(missing_ok=True)
    summary.embedded, summary.replaced = run.committed, run.replaced
    summary.already_indexed, summary.dropped, summary.failed = len(unchanged), dropped, run.failed
    summary.total_in_index = writer.build_faiss()
    summary.seconds = time.perf_counter() - t0
    summary.stages = stages.as_dict(summary.seconds)
    index._reload()
    return summary


def _dataset(sources: list[Source], rt, root: Path, *, mode: str, actors: int, batch_size: int,
             threads: int | None, task_retries: int, device: str, bundle: str, engine_key: str | None):
    """The Ray Data pipeline over `sources`: decode tasks, then the encoder actor pool."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"path": s.path, "file_size": s.size, "mtime_ns": s.mtime_ns} for s in sources]
    resources = _resources(actors, device)
    if threads is None:
        threads = max(1, int(resources.get("num_cpus", 1)))
    manifest_json = json.dumps(rt.bundle.manifest)
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4096))
    ds = ds.map(decode_row, fn_kwargs={"manifest_json": manifest_json, "mode": mode}, num_cpus=1)
    with warnings.catch_warnings():  # Ray 2.60 takes the actors' restart limits only as remote args
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
        return ds.map_batches(
            Encoder, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"bundle": bundle, "backend": rt.backend, "engine": engine_key, "threads": threads,
                                   "parts": str(root.resolve() / PARTS)},
            max_restarts=-1, max_task_retries=task_retries, **resources)
