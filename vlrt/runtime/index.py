"""An embedding index on disk: append-only shards that merge, plus a FAISS index over them.

Layout of an index directory:
    index.json                what made it: the bundle (path relative to the index, absolute path,
                              manifest hash), the engine (key, backend, precision, options), embed dim
    shards/NNNNNN.npy         (n, D) float32 L2-normalised video embeddings
    shards/NNNNNN.frames.npy  (n, T, D) float16 per-frame embeddings, when kept (always for a
                              multi-grained model, with one more column per per-frame scalar its
                              scorer takes: DRL's frame weights); with frames_dtype "int8" int8
                              embeddings, and .frames_scale.npy (n, T) and .frames_extra.npy
                              (n, T, scalars) in fp16 beside them (vlrt/runtime/records.py)
    shards/NNNNNN.jsonl       one JSON line per row: path, file size and mtime, frames used, and what
                              the decoder saw; and {"drop": path} lines, which remove that path's
                              rows in earlier shards
    errors.jsonl              one line per file whose latest attempt failed
    faiss.index               inner-product index over the live rows (flat, HNSW or IVF-PQ by size:
                              vlrt/runtime/ann.py), recorded in index.json with the rows it covers
    milvus.db                 with ann "milvus", Milvus Lite holding the collection that replaces
                              faiss.index, unless index.json names a Milvus server (vlrt/runtime/milvus.py)
    .lock                     flock'd by the one writer (its pid inside); readers take no lock

A shard's .jsonl is written last, by rename: a shard without it is an interrupted write and is
discarded on open, so a killed job loses at most the shard in flight. A path's live row is its
last row, unless a later shard drops it: replacing a row appends the new one, so an interrupted
run never shows a path twice and never loses the old row before the new one is committed.
`compact` rewrites the live rows into one shard, then deletes the old shards oldest first; a crash
at any point leaves the same live rows. A reader that lists the shards while a compaction
deletes them lists them again.

An index can be built in parts, each by its own writer into its own directory, and merged:
vlrt/runtime/merge.py.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.bundle import MANIFEST, sha256_file

INDEX_VERSION = 2  # 2: relative bundle path, engine record, file size/mtime per row, drop lines
SHARD = re.compile(r"^(\d{6})\.jsonl$")
INDEX_META = "index.json"
INT8_SCALE, INT8_EXTRA = ".frames_scale.npy", ".frames_extra.npy"  # beside an int8 .frames.npy
ERRORS = "errors.jsonl"
LOCK = ".lock"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2).encode()))


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def read_meta(root: Path) -> dict[str, Any]:
    """index.json, or VlrtError naming it when it is not a vlrt index record."""
    path = Path(root) / INDEX_META
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = _os_reason(exc) if isinstance(exc, OSError) else f"not valid JSON ({exc})"
        raise VlrtError(f"{path}: cannot read this index's record: {reason}; restore it, or embed into a new "
                        "output directory") from None
    if not isinstance(meta, dict) or not {"bundle_manifest_sha256", "embed_dim"} <= meta.keys():
        raise VlrtError(f"{path}: not a vlrt index record (no bundle_manifest_sha256 or embed_dim); restore it, "
                        "or embed into a new output directory")
    return meta


def _describe(encoder: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(encoder.items()))


def bundle_record(index_root: Path, bundle: str | Path) -> dict[str, str]:
    """Where the bundle is, relative to the index (so that both can move together) and absolute
    (so that the index alone can move)."""
    bundle_abs = os.path.realpath(bundle)
    return {"bundle": os.path.relpath(bundle_abs, os.path.realpath(index_root)), "bundle_absolute": bundle_abs}


@dataclasses.dataclass
class Scan:
    """The shards of an index as they are on disk: which row of which shard is each path's live one."""

    stems: list[str]
    live: dict[str, tuple[int, int, dict[str, Any]]]  # path -> (shard position, row in shard, row)
    counts: list[int]  # rows stored in each shard, live or not

    @property
    def stored(self) -> int:
        return sum(self.counts)

    @property
    def dead(self) -> int:
        return self.stored - len(self.live)

    def ordered(self) -> list[tuple[int, int, dict[str, Any]]]:
        return sorted(self.live.values(), key=lambda v: (v[0], v[1]))


def _stems(root: Path) -> list[str]:
    shards = root / "shards"
    return sorted(m.group(1) for p in shards.iterdir() if (m := SHARD.match(p.name))) if shards.is_dir() else []


def scan(root: Path) -> Scan:
    stems = _stems(root)
    live: dict[str, tuple[int, int, dict[str, Any]]] = {}
    counts = []
    for i, stem in enumerate(stems):
        j = 0
        with open(root / "shards" / f"{stem}.jsonl") as fh:
            for record in (json.loads(line) for line in fh if line.strip()):
                if "drop" in record:
                    live.pop(record["drop"], None)
                    continue
                live[record["path"]] = (i, j, record)
                j += 1
        counts.append(j)
    return Scan(stems, live, counts)


def load_shards(root: Path, *, frames: bool = False) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(live embeddings (n, D), their rows), in shard order; with frames=True the per-frame
    embeddings (n, T, D) instead of the video embeddings (every shard must have them).
    Readers take no lock: a shard deleted by a compaction between listing and reading it means
    the listing is out of date, so it is read once more, and then VlrtError."""
    try:
        return _load_shards(Path(root), frames)
    except FileNotFoundError:
        pass
    try:
        return _load_shards(Path(root), frames)
    except FileNotFoundError as exc:
        raise VlrtError(f"{root}: the index changed while it was being read ({exc.filename} vanished; another "
                        "process is writing it); try again") from None


def _load_shards(root: Path, frames: bool) -> tuple[Any, list[dict[str, Any]]]:
    s = scan(root)
    meta = read_meta(root)
    dim = int(meta["embed_dim"])
    picks: dict[int, list[int]] = {}
    rows = []
    for i, j, row in s.ordered():
        picks.setdefault(i, []).append(j)
        rows.append(row)
    suffixes = [".frames.npy"] if frames else [".npy"]
    used = [stem for i, stem in enumerate(s.stems) if i in picks]
    if frames and used and (meta.get("encoder") or {}).get("frames_dtype") == "int8":
        extra = (root / "shards" / f"{used[0]}{INT8_EXTRA}").is_file()  # every shard alike: one model
        suffixes = [".frames.npy", INT8_SCALE] + ([INT8_EXTRA] if extra else [])
    parts: list[list[np.ndarray]] = [[] for _ in suffixes]
    for i, stem in enumerate(s.stems):
        if frames and i not in picks:
            continue
        for part, suffix in zip(parts, suffixes):
            arr = np.load(root / "shards" / f"{stem}{suffix}", mmap_mode="r")
            if len(arr) != s.counts[i]:
                raise VlrtError(f"{root}: shard {stem} holds {len(arr)} embeddings but {s.counts[i]} metadata rows; "
                                "the index is damaged")
            if i in picks:
                part.append(np.asarray(arr[picks[i]]))
    if len(suffixes) > 1:  # int8 per-frame records (vlrt/runtime/records.py)
        from vlrt.runtime.records import Int8Records

        q, scale, *extra = [np.concatenate(p) for p in parts]
        return Int8Records(q, scale, extra[0] if extra else None), rows
    emb = np.concatenate(parts[0]) if parts[0] else np.zeros((0, dim), np.float32)
    return emb, rows


class _WriterLock:
    """An exclusive flock on INDEX/.lock, held while one writer lives: two writers would number
    their shards alike, and each would discard the other's shard in flight as interrupted. The
    lock goes with the open file, so it is released when the writer closes or is collected, and
    by the system when the process ends, however it ends."""

    def __init__(self, root: Path) -> None:
        self.fd: int | None = None
        try:
            fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VlrtError(f"{root}: cannot write to this index: {_os_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise VlrtError(f"{root}: cannot lock this index for writing: {_os_reason(exc)}") from None
            if holder == str(os.getpid()):
                raise VlrtError(f"{root} is being written by another Index or IndexWriter in this process; "
                                "close it first") from None
            raise VlrtError(f"{root} is being written by another process (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message a second writer gets
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = release


def _ann_record(root: Path, ann: str | None, milvus_uri: str | None, milvus_collection: str | None) -> dict[str, Any]:
    """index.json's record of the vector index asked for, before it is built: {"requested"}, and
    for "milvus" where its collection lives (vlrt/runtime/milvus.py): as given (the defaults for
    what is not), or, with neither given, as recorded. A Milvus record that stays the same is
    kept whole, with its build."""
    from vlrt.runtime.ann import choose

    if ann != "milvus" and (milvus_uri is not None or milvus_collection is not None):
        raise VlrtError("--milvus-uri and --milvus-collection (milvus_uri, milvus_collection) go with --ann milvus "
                        "(ann='milvus')")
    choose(0, ann)  # a known kind
    if ann != "milvus":
        return {"requested": ann}
    from vlrt.runtime import milvus

    recorded = (read_meta(root).get("ann") or {}) if (root / INDEX_META).is_file() else {}
    record = {"requested": ann, **milvus.settings(root, milvus_uri, milvus_collection)}
    if recorded.get("requested") == "milvus" and ((milvus_uri is None and milvus_collection is None)
                                                  or all(recorded.get(key) == v for key, v in record.items())):
        record = recorded
    milvus.require(record["uri"])  # now, not after the embedding
    return record


def _make_dirs(root: Path) -> None:
    """The index directory and its shards/, or VlrtError naming the directory."""
    if root.exists() and not root.is_dir():
        raise VlrtError(f"{root}: not a directory, so it cannot hold an index; give a new or existing directory")
    try:
        (root / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VlrtError(f"{root}: cannot make the index directory: {_os_reason(exc)}") from None


class IndexWriter:
    """Appends shards to an index directory; reopening continues where the last run stopped. One
    writer at a time: it holds the index's lock until `close()` (or until it is collected)."""

    def __init__(self, root: str | Path, *, bundle: str | Path | None, manifest_sha256: str, embed_dim: int,
                 encoder: dict[str, Any] | None = None, engine: dict[str, Any] | None = None,
                 ann: str | None = None, milvus_uri: str | None = None,
                 milvus_collection: str | None = None) -> None:
        """`encoder`: how the embeddings are made (engine key, frame skipping, preprocessing mode);
        a resumed run must make them the same way. `engine`: the engine's record (backend,
        precision, key, options), which search uses to encode queries alike. `bundle` None: keep
        the recorded bundle path (an existing index). `milvus_uri`, `milvus_collection`: where
        ann "milvus" keeps its collection (vlrt/runtime/milvus.py; None: the defaults)."""
        self.root = Path(root)
        self.shards = self.root / "shards"
        _make_dirs(self.root)
        self._lock = _WriterLock(self.root)  # before anything is written or discarded
        meta = {"version": INDEX_VERSION, "bundle_manifest_sha256": manifest_sha256, "embed_dim": embed_dim}
        if bundle is not None:
            meta.update(bundle_record(self.root, bundle))
        meta.update({k: v for k, v in (("encoder", encoder), ("engine", engine)) if v is not None})
        try:
            if (ann, milvus_uri, milvus_collection) != (None, None, None):  # the vector index to build
                meta["ann"] = _ann_record(self.root, ann, milvus_uri, milvus_collection)  # at the end of a run
            self.meta = self._check_or_write_meta(meta)
        except BaseException:
            self.close()  # a refused writer must not keep the index locked while its traceback lives
            raise
        self._discard_partial()
        self.next_shard = 1 + max((int(s) for s in _stems(self.root)), default=-1)
        self.errors = read_errors(self.root)

    def close(self) -> None:
        """Release the index's lock; this writer writes no more."""
        self._lock.release()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_or_write_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        path = self.root / INDEX_META
        if not path.is_file():
            _write_json(path, meta)
            return meta
        old = read_meta(self.root)
        if old.get("bundle_manifest_sha256") != meta["bundle_manifest_sha256"]:
            raise VlrtError(f"{self.root}: this index was built with another bundle ({old.get('bundle')}); "
                            "embeddings from two models cannot share an index — use a new output directory")
        if "encoder" in old and "encoder" in meta:
            recorded = dict(old["encoder"])
            if "keep_frames" in meta["encoder"] and "keep_frames" not in recorded:  # an index made before it was
                recorded["keep_frames"] = kept_frames(self.root, old, default=meta["encoder"]["keep_frames"])
            if recorded != meta["encoder"]:
                raise VlrtError(f"{self.root}: this index was embedded with {_describe(recorded)}, not "
                                f"{_describe(meta['encoder'])}; resume with the same options, or use a new "
                                "output directory")
        new = {**old, **meta}  # records where the bundle is now, and fills in what older versions lacked
        if new != old:
            _write_json(path, new)
        return new

    def _check_open(self) -> None:
        if self._lock.fd is None:
            raise VlrtError(f"{self.root}: this IndexWriter is closed")

    def _discard_partial(self) -> None:
        complete = set(_stems(self.root))
        for p in self.shards.iterdir():
            if p.name.startswith(".") or p.name.split(".")[0] not in complete:
                p.unlink()

    def scan(self) -> Scan:
        return scan(self.root)

    def done_paths(self) -> set[str]:
        return set(self.scan().live)

    def hold_write_lock(self) -> None:
        """Take the index's write lock now (VlrtError if another writer holds it), for a process
        that will add to it later; `close()` releases it."""
        self._writer_for_add()

    def append(self, embeddings: np.ndarray, rows: Sequence[dict[str, Any]], frames: np.ndarray | None = None,
               *, drop: Iterable[str] = ()) -> None:
        """Commit one shard: `rows` with their embeddings, and the removal of every earlier row of
        the paths in `drop`, together (one rename)."""
        self._check_open()
        drop = list(drop)
        if len(embeddings) != len(rows):
            raise ValueError("one metadata row per embedding")
        if not rows and not drop:
            return
        dim = int(self.meta["embed_dim"])
        stored = {".npy": np.asarray(embeddings, np.float32).reshape(len(rows), dim)}
        if frames is not None and (self.meta.get("encoder") or {}).get("frames_dtype") == "int8":
            from vlrt.runtime.records import quantize

            q, scale, extra = quantize(frames, dim)
            stored.update((suffix, arr) for suffix, arr in ((".frames.npy", q), (INT8_SCALE, scale),
                                                            (INT8_EXTRA, extra)) if arr is not None)
        elif frames is not None:
            stored[".frames.npy"] = np.asarray(frames, np.float32).astype(np.float16)
        self.commit_shard(stored, rows, drop=drop)

    def commit_shard(self, stored: dict[str, np.ndarray], rows: Sequence[dict[str, Any]], *,
                     drop: Iterable[str] = ()) -> None:
        """Commit one shard of arrays as they are stored, by file suffix (".npy": the (n, D) float32
        video embeddings; ".frames.npy", and with int8 records INT8_SCALE and INT8_EXTRA: the
        per-frame records), one entry per row of `rows`, and the removal of every earlier row of
        the paths in `drop`, together (one rename)."""
        self._check_open()
        drop = list(drop)
        if any(len(arr) != len(rows) for arr in stored.values()):
            raise ValueError("one metadata row per stored entry")
        stem = f"{self.next_shard:06d}"
        for suffix, arr in stored.items():
            _atomic_write(self.shards / f"{stem}{suffix}", lambda fh, arr=arr: np.save(fh, arr))
        lines = [json.dumps({"drop": p}) for p in drop] + [json.dumps(r) for r in rows]
        data = "".join(line + "\n" for line in lines).encode()
        _atomic_write(self.shards / f"{stem}.jsonl", lambda fh: fh.write(data))  # commits the shard
        self.next_shard += 1
        self.clear_errors(r["path"] for r in rows)

    def drop(self, paths: Iterable[str]) -> None:
        """Remove the rows of `paths` (one committed shard of drop lines)."""
        self.append(np.zeros((0, int(self.meta["embed_dim"])), np.float32), [], drop=paths)

    def report_error(self, path: str, reason: str, *, given: str | None = None) -> None:
        """Record that `path` failed, whether or not an older embedding of it is in the index.
        Appended at once (visible during a long run); `save_errors` leaves one line per file."""
        self._check_open()
        entry = {"path": path, "error": reason, **({"given": given} if given and given != path else {})}
        self.errors[path] = entry
        with open(self.root / ERRORS, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def clear_errors(self, paths: Iterable[str]) -> None:
        """Forget the errors of files that embedded, or were found unchanged since they embedded."""
        for path in paths:
            self.errors.pop(path, None)

    def save_errors(self) -> int:
        """Rewrite errors.jsonl: the latest error of each file whose latest attempt failed (see
        `report_error`, `clear_errors`). Returns the count."""
        self._check_open()
        data = "".join(json.dumps(e) + "\n" for e in self.errors.values()).encode()
        _atomic_write(self.root / ERRORS, lambda fh: fh.write(data))
        return len(self.errors)

    def build_faiss(self, kind: str | None = None, *, approximate: bool = True) -> int:
        """(Re)build faiss.index over the live rows, of the kind asked for (None: the one recorded,
        by default "auto": chosen by size, vlrt/runtime/ann.py), and record it in index.json with
        a digest of the rows it covers; returns their count. `approximate=False` builds only a flat
        index: where HNSW or IVF-PQ is due (minutes at a million rows), the old file is left, its
        digest no longer matches, and searches go exact until a later build. "milvus" rebuilds
        the Milvus collection instead (vlrt/runtime/milvus.py), and `approximate=False` leaves it
        as it is, stale, likewise."""
        import faiss

        from vlrt.runtime import ann

        self._check_open()
        requested = kind or (self.meta.get("ann") or {}).get("requested", "auto")
        emb, rows = load_shards(self.root)
        if not approximate and ann.choose(len(rows), requested) != "flat":
            return len(rows)
        if requested == "milvus":
            return self._build_milvus(emb, rows)
        index = ann.build(emb, requested)
        tmp = self.root / ".faiss.index.tmp"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, self.root / "faiss.index")
        self.meta["ann"] = {"requested": requested, "kind": ann.kind_of(index), "rows": len(rows),
                            "rows_sha256": rows_digest(rows)}
        _write_json(self.root / INDEX_META, self.meta)
        return index.ntotal

    def _build_milvus(self, emb: np.ndarray, rows: list[dict[str, Any]]) -> int:
        """Rebuild the Milvus collection over the live rows where index.json says (else at the
        defaults), and record it with the rows it covers."""
        from vlrt.runtime import milvus

        recorded = self.meta.get("ann") or {}
        where = {key: recorded[key] for key in ("uri", "collection")} if recorded.get("requested") == "milvus" \
            else milvus.settings(self.root)
        with milvus.Store(milvus.resolve(self.root, where["uri"]), where["collection"]) as store:
            built = store.rebuild(emb)
        self.meta["ann"] = {"requested": "milvus", "kind": "milvus", **where, **built, "rows": len(rows),
                            "rows_sha256": rows_digest(rows)}
        _write_json(self.root / INDEX_META, self.meta)
        (self.root / "faiss.index").unlink(missing_ok=True)  # an earlier kind's, no longer read
        return len(rows)

    def compact(self) -> bool:
        """Rewrite the live rows into one new shard and delete the old shards. False (nothing
        done) when no row is dead, or when only some shards kept per-frame embeddings (indexes
        made before keep_frames was a recorded option)."""
        self._check_open()
        s = self.scan()
        if not s.dead:
            return False
        used = {i for i, _, _ in s.live.values()}
        with_frames = {(self.shards / f"{s.stems[i]}.frames.npy").is_file() for i in used}
        if len(with_frames) > 1:
            return False
        emb, rows = load_shards(self.root)
        frames = load_shards(self.root, frames=True)[0] if with_frames == {True} else None
        self.append(emb, rows, frames)
        int8 = (self.meta.get("encoder") or {}).get("frames_dtype") == "int8"
        suffixes = (".jsonl", ".npy", ".frames.npy") + ((INT8_SCALE, INT8_EXTRA) if int8 else ())
        for stem in s.stems:  # oldest first: any prefix deleted leaves the same live rows
            for suffix in suffixes:  # un-commit first
                (self.shards / f"{stem}{suffix}").unlink(missing_ok=True)
        return True


def rows_digest(rows: Sequence[dict[str, Any]]) -> str:
    """What a faiss.index covers: the live rows' paths, in order."""
    return hashlib.sha256("\n".join(r["path"] for r in rows).encode()).hexdigest()


def kept_frames(root: Path, meta: dict[str, Any], *, default: bool = False) -> bool:
    """Whether the index keeps per-frame embeddings: a recorded encoder option; an index made
    before it was recorded keeps them if its last shard with rows did (`default` when none has)."""
    encoder = meta.get("encoder") or {}
    if "keep_frames" in encoder:
        return bool(encoder["keep_frames"])
    s = scan(root)
    filled = [stem for stem, n in zip(s.stems, s.counts) if n]
    return (root / "shards" / f"{filled[-1]}.frames.npy").is_file() if filled else default


def read_errors(root: Path) -> dict[str, dict[str, Any]]:
    """errors.jsonl as {path: entry}, the last line of each path winning (older files repeat paths)."""
    path = Path(root) / ERRORS
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(entry, dict) and "path" in entry:
                out[entry["path"]] = entry
    return out


def find_bundle(root: Path, meta: dict[str, Any], override: str | Path | None = None) -> Path:
    """The bundle an index was embedded with: `override`, else the recorded place relative to the
    index, else the recorded absolute place. Its manifest must be the recorded one."""
    sha = meta["bundle_manifest_sha256"]
    if override is not None:
        found = _bundle_state(Path(override), sha)
        if found != "ok":
            raise VlrtError(f"{override}: {found}; this index ({root}) was embedded with the bundle whose "
                            f"{MANIFEST} has sha256 {sha[:16]}...")
        return Path(override)
    tried = []
    for candidate in _recorded_bundles(root, meta):
        state = _bundle_state(candidate, sha)
        if state == "ok":
            return candidate
        tried.append(f"{candidate} ({state})")
    raise VlrtError(f"{root}: the bundle this index was embedded with is missing: tried {'; '.join(tried)}. "
                    f"If it moved, give its new place: `vlrt search {root} TEXT --bundle DIR` "
                    "(Index.open(..., bundle=DIR)); `vlrt embed DIR ... -o INDEX` also records it")


def _recorded_bundles(root: Path, meta: dict[str, Any]) -> list[Path]:
    out: list[Path] = []
    for recorded in (meta.get("bundle"), meta.get("bundle_absolute")):
        if recorded:
            path = Path(recorded) if os.path.isabs(recorded) else Path(os.path.normpath(Path(root).absolute() / recorded))
            if path not in out:
                out.append(path)
    return out


def _bundle_state(path: Path, sha: str) -> str:
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} there" if path.is_dir() else "no such directory"
    if sha256_file(manifest) != sha:
        return "a different bundle: its manifest differs"
    return "ok"


ProgressCallback = Callable[[Any], None]
_NO_ARGS = (None, None, None, None)  # Index.runtime(): the engine the videos were embedded with


class Index:
    """An index directory: search it, and add videos to it.

    `Index.open(dir)` reads an index; `Index.create(dir, bundle, ...)` makes one (or reopens it
    to add more, with the same model and options). Queries are encoded by the engine the videos
    were embedded with (recorded in index.json). Nothing here prints.

    Reading takes no lock. Writing (`create`, `add`, `prune`, `compact`) holds the index's write
    lock until `close()` (or `with Index.create(...) as index:`, or until the Index is collected):
    a second writer, in this process or another, gets VlrtError.
    """

    def __init__(self, root: Path, meta: dict[str, Any], embeddings: np.ndarray | None = None,
                 rows: list[dict[str, Any]] | None = None, *, bundle: str | Path | None = None) -> None:
        self.root = Path(root)
        self.meta = meta
        self._data = (embeddings, rows) if embeddings is not None and rows is not None else None
        self._bundle_override = bundle
        self._faiss = None
        self._frames: np.ndarray | None = None
        self._runtime = None  # encodes queries
        self._runtime_args: tuple[Any, ...] = _NO_ARGS  # what `runtime()` loaded it with
        self._add_runtime = None  # encodes videos, with the recorded options
        self._writer: IndexWriter | None = None
        self._embed_options: dict[str, Any] = {}

    def close(self) -> None:
        """Release the write lock, if this Index holds it (a later `add` takes it again), and its
        Milvus connection, if it has one (a later search opens it again)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._drop_ann()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(cls, path: str | Path, *, bundle: str | Path | None = None) -> "Index":
        """Open an index made by `vlrt embed` or `Index.create`. `bundle`: where its bundle is now,
        when it moved (by default the recorded place, relative to the index, then absolute)."""
        root = Path(path)
        meta_path = root / INDEX_META
        if not meta_path.is_file():
            raise VlrtError(f"{root}: not a vlrt index (no {INDEX_META}); make one with `vlrt embed`")
        meta = read_meta(root)
        emb, rows = load_shards(root)
        return cls(root, meta, emb, rows, bundle=bundle)

    @classmethod
    def create(cls, path: str | Path, bundle: str | Path, *, backend: str | None = None,
               precision: str | None = None, engine: str | None = None, token_merge: int = 0,
               skip_similar: float | None = None, mode: str = "exact", keep_frames: bool = False,
               part: tuple[int, int] | None = None, threads: int | None = None, ann: str | None = None,
               frames_dtype: str = "fp16", milvus_uri: str | None = None,
               milvus_collection: str | None = None) -> "Index":
        """Make an index directory for `bundle` (or reopen it to add more: the same bundle and
        encoding options, else VlrtError) and load the bundle with these options (see
        `Runtime.load`). `mode`: preprocessing, "exact" or "fast"; `keep_frames`: also store
        per-frame embeddings (always, for a multi-grained model's bundle); `ann`: the vector
        index searches use, "auto" (by size), "flat", "hnsw" or "ivfpq" (vlrt/runtime/ann.py;
        None: as recorded, else auto), or "milvus", a Milvus collection at `milvus_uri` named
        `milvus_collection` (vlrt/runtime/milvus.py; None: Milvus Lite in INDEX/milvus.db, and
        "vlrt_videos" there, else a name derived from the index's path); `frames_dtype`: how
        per-frame records are stored, "fp16" or "int8" (half the bytes; vlrt/runtime/records.py);
        `part`: (i, n) makes this index part i of n, which embeds only the files whose path falls
        in that part and is merged with the others later (vlrt/runtime/merge.py), recorded with
        the encoding options."""
        from vlrt.runtime.merge import check_part, part_label
        from vlrt.runtime.runtime import Runtime

        part = check_part(part) if part is not None else None
        rt = Runtime.load(bundle, backend=backend, precision=precision, engine=engine, token_merge=token_merge,
                          skip_similar=skip_similar, threads=threads)
        keep_frames = keep_frames or rt.multi_vector  # the model's scorer reads them
        if frames_dtype not in ("fp16", "int8"):
            raise VlrtError(f"frames_dtype {frames_dtype!r}: per-frame records are stored as fp16 or int8")
        if frames_dtype == "int8" and not keep_frames:
            raise VlrtError("int8 per-frame records need an index that keeps them (keep_frames=True, --keep-frames)")
        info = rt.engine_info
        encoder = {"engine": info["engine"], "skip_similar": skip_similar, "mode": mode, "keep_frames": keep_frames}
        if frames_dtype == "int8":  # recorded only when not the default: older indexes compare equal
            encoder["frames_dtype"] = "int8"
        if part is not None:  # likewise: an index that is not a part records none
            encoder["part"] = part_label(part)
        writer = IndexWriter(path, bundle=bundle, manifest_sha256=sha256_file(Path(bundle) / MANIFEST),
                             embed_dim=rt.embed_dim, encoder=encoder, engine=info, ann=ann,
                             milvus_uri=milvus_uri, milvus_collection=milvus_collection)
        index = cls(Path(path), writer.meta, bundle=bundle)  # rows load when first used
        index._runtime = index._add_runtime = rt
        index._runtime_args, index._writer = (backend, precision, engine, threads), writer
        index._embed_options = {"mode": mode, "keep_frames": keep_frames, "part": part}
        return index

    @property
    def embeddings(self) -> np.ndarray:
        """(n, D) float32 live video embeddings, in shard order."""
        return self._loaded()[0]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per live embedding: path, file size and mtime, frames used, what the decoder saw."""
        return self._loaded()[1]

    def _loaded(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if self._data is None:
            self._data = load_shards(self.root)
        return self._data

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.rows]

    @property
    def engine(self) -> dict[str, Any]:
        """How the embeddings were made: backend, precision, engine key (None: the bundle's fp32
        graphs), options. Older indexes recorded only the key."""
        recorded = self.meta.get("engine") or {}
        key = recorded.get("engine", (self.meta.get("encoder") or {}).get("engine"))
        return {"backend": recorded.get("backend"), "precision": recorded.get("precision"), "engine": key,
                "options": recorded.get("options", {})}

    def bundle_path(self) -> Path:
        return find_bundle(self.root, self.meta, self._bundle_override)

    def runtime(self, *, backend: str | None = None, precision: str | None = None, engine: str | None = None,
                threads: int | None = None):
        """The Runtime queries are encoded with, loaded by the first call (or by `create`). By
        default the engine the videos were embedded with; `precision`, `engine` or another
        `backend` choose another. Later calls without arguments, or with the same ones, return
        it; other arguments are refused (VlrtError), since `search` encodes with this one."""
        args = (backend, precision, engine, threads)
        if self._runtime is None:
            self._runtime, self._runtime_args = self._load_runtime(*args), args
        elif args not in (_NO_ARGS, self._runtime_args):
            given = ", ".join(f"{k}={v}" for k, v in zip(("backend", "precision", "engine", "threads"), args))
            raise VlrtError(f"{self.root}: this Index already encodes queries with {self._runtime.engine_line()}, "
                            f"not as asked ({given}); open the index again for another runtime")
        return self._runtime

    def _load_runtime(self, backend: str | None, precision: str | None, engine: str | None, threads: int | None):
        from vlrt.runtime.runtime import Runtime

        bundle = self.bundle_path()
        recorded = self.engine["engine"]
        if precision is None and engine is None and recorded is not None:
            # the recorded engine, unless another backend is asked for (it runs on its own backend)
            own = self._engine_backend(bundle)
            if backend in (None, own):
                engine, backend = recorded, own
        try:
            return Runtime.load(bundle, backend=backend, precision=precision, engine=engine, threads=threads)
        except VlrtError as exc:
            if engine is None or engine != self.engine["engine"]:
                raise
            raise VlrtError(f"{exc} — the index was embedded with engine {engine}, and queries are encoded "
                            "by the same engine; build it here, or query through the bundle's fp32 graphs "
                            "(`vlrt search ... --precision fp32`, Index.runtime(precision='fp32'))") from None

    def _engine_backend(self, bundle: Path) -> str | None:
        """The backend of the recorded engine (older indexes: read from the engine's own manifest)."""
        info = self.engine
        if info["engine"] is None or info["backend"]:
            return info["backend"] if info["engine"] else None
        manifest = bundle / "engines" / info["engine"] / "engine.json"
        return json.loads(manifest.read_text()).get("backend") if manifest.is_file() else None

    def search(self, query: str | np.ndarray, *, k: int = 10, frames: int | None = None,
               rerank: int | None = None) -> list[tuple[str, float]]:
        """Best k videos for a text (or a (D,) query embedding): [(path, score), ...], best first.

        The score is the cosine with the video embedding. With `frames=K` (an index that keeps
        per-frame embeddings) it is the mean cosine of the video's K best-matching frames
        (query-time frame selection, vlrt/runtime/scoring.py): over every video, or, with
        `rerank=N`, over the N (at least k) best by video embedding (a two-stage search).
        An index of a multi-grained model (X-CLIP, DRL: a scorer graph) scores a text with the
        model's own scorer, over every video or, with `rerank=N`, over the N best by video
        embedding; a query embedding is scored by the dot product only."""
        if k < 1:
            raise VlrtError(f"k must be >= 1, got {k}")
        if isinstance(query, str) and not query.strip():
            raise VlrtError("the query is empty: give the text to search for")
        rt = self.runtime() if isinstance(query, str) else None
        scorer = rt is not None and rt.multi_vector and frames is None
        if rerank is not None and (rerank < 1 or (frames is None and not scorer)):
            raise VlrtError("rerank=N (N >= 1) rescores the first stage's N best by frame selection (give frames=K "
                            "too) or, for a multi-grained model's index and a text query, by the model's scorer")
        if scorer:
            text = rt.encode_text_outputs([query])
            vec = text[rt.bundle.outputs("text")[0]]
        else:
            vec = rt.encode_text([query]) if rt is not None else np.asarray(query, np.float32)[None]
        vec = vec.astype(np.float32)
        if scorer and rerank is None:
            exact = rt.score(text, self._video_features(rt))
            ids = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(exact, ids, axis=1)
        elif scorer:
            from vlrt.runtime.scoring import two_stage

            rescore = lambda q, cand: rt.score(text, self._video_features(rt, cand))[0]  # noqa: E731
            scores, ids = two_stage(vec, self.embeddings, rescore, k=k, depth=rerank, first=self._search)
        elif frames is None:
            scores, ids = self._search(vec, min(k, len(self)))
        elif rerank is None:
            from vlrt.runtime.scoring import frame_scores

            exact = frame_scores(vec, self.frames, frames)
            ids = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(exact, ids, axis=1)
        else:
            from vlrt.runtime.scoring import frame_rescorer, two_stage

            scores, ids = two_stage(vec, self.embeddings, frame_rescorer(vec, self.frames, frames), k=k,
                                    depth=rerank, first=self._search)
        return [(self.rows[i]["path"], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    def _video_features(self, rt, ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """What the model's scorer takes of the videos `ids` (all: None), by input name."""
        record = self.frame_records if ids is None else self.frame_records[ids]
        features = rt.split_frame_record(record)
        features[rt.bundle.outputs("video")[0]] = self.embeddings if ids is None else self.embeddings[ids]
        return features

    @property
    def frames(self) -> np.ndarray:
        """(n, T, D) float16 per-frame embeddings of the live rows (zero rows: padded frames), for
        an index that keeps them (`vlrt embed --keep-frames`); loaded on first use."""
        return self.frame_records[..., :int(self.meta["embed_dim"])]

    @property
    def frame_records(self) -> np.ndarray:
        """(n, T, D [+ scalars]) per-frame records as stored: the per-frame embeddings, and for a
        multi-grained model the per-frame scalars its scorer takes (`Runtime.frame_record_names`);
        float16, or `Int8Records` for an index made with frames_dtype="int8"."""
        if self._frames is None:
            if not kept_frames(self.root, self.meta):
                raise VlrtError(f"{self.root}: this index keeps no per-frame embeddings, which frame selection "
                                "scores; embed it with --keep-frames (Index.create(..., keep_frames=True))")
            frames = load_shards(self.root, frames=True)[0]
            if len(frames) != len(self):
                raise VlrtError(f"{self.root}: the index changed while it was being read; open it again")
            self._frames = frames
        return self._frames

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from vlrt.runtime import ann, milvus

        if k == 0:
            return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), np.int64)
        index = self._load_faiss()
        if isinstance(index, milvus.Store):
            found = index.search(queries, k)
            if found is not None:
                return found
            flat = self._flat()
            if index.closed:  # the store changed since this Index read index.json, or failed
                self._faiss = flat  # exact from now on; else only this search is past Milvus's top-k limit
            index = flat
        return ann.search(index, self.embeddings, queries, k)

    @property
    def ann_kind(self) -> str:
        """The structure searches use: "flat", "hnsw" or "ivfpq" (vlrt/runtime/ann.py), or
        "milvus" (vlrt/runtime/milvus.py)."""
        from vlrt.runtime import ann, milvus

        index = self._load_faiss()
        return "milvus" if isinstance(index, milvus.Store) else ann.kind_of(index)

    def _load_faiss(self):
        import faiss

        if self._faiss is None:
            record = self.meta.get("ann") or {}
            path = self.root / "faiss.index"
            current = record.get("rows") == len(self) and record.get("rows_sha256") == rows_digest(self.rows)
            if current and record.get("kind") == "milvus":  # built by the last writer over exactly these rows
                from vlrt.runtime import milvus

                self._faiss = milvus.open_store(self.root, record)  # None: it cannot be used
            elif current and record.get("kind") in ("hnsw", "ivfpq") and path.is_file():
                self._faiss = faiss.read_index(str(path))  # built by the last writer over exactly these rows
            if self._faiss is None:  # exact, from the live rows just loaded (a copy), so never stale
                self._faiss = self._flat()
        return self._faiss

    def _flat(self):
        """An exact index over the live rows loaded (a copy)."""
        import faiss

        index = faiss.IndexFlatIP(self.embeddings.shape[1])
        index.add(np.ascontiguousarray(self.embeddings, np.float32))
        return index

    def _drop_ann(self) -> None:
        """Forget the vector index, closing the Milvus connection if it is one."""
        from vlrt.runtime import milvus

        if isinstance(self._faiss, milvus.Store):
            self._faiss.close()
        self._faiss = None

    def add(self, paths: Iterable[str], *, batch_size: int = 8, workers: int = 2, shard_size: int = 64,
            progress: ProgressCallback | None = None):
        """Embed `paths` (files, folders, globs, @lists; see vlrt.runtime.paths) into the index and
        return an `EmbedSummary`. Files already embedded and unchanged (size, mtime) are skipped,
        changed ones re-embedded, rows of deleted files dropped; a bad path is reported in the
        summary, never raised. An index made as a part embeds only the files of its part.
        `progress(EmbedEvent)` is called as files finish."""
        from vlrt.runtime.corpus import embed_into

        summary = embed_into(self._writer_for_add(), self._runtime_for_add(), paths, batch_size=batch_size,
                             workers=workers, shard_size=shard_size, progress=progress, **self._embed_options)
        self._reload()
        return summary

    def hold_write_lock(self) -> None:
        """Take the index's write lock now (VlrtError if another writer holds it), for a process
        that will add to it later; `close()` releases it."""
        self._writer_for_add()

    def append(self, embeddings: np.ndarray, rows: list[dict[str, Any]], frames: np.ndarray | None = None) -> int:
        """Commit videos embedded elsewhere (a server that decodes and encodes them itself) as one
        shard, searchable at once: `rows` as `add` writes them (path, file_size, mtime_ns and what
        the decoder saw), `frames` with an index that keeps per-frame embeddings. A path already
        in the index gets the new row. Returns the number of videos in the index."""
        if kept_frames(self.root, self.meta) != (frames is not None):
            raise VlrtError(f"{self.root}: per-frame embeddings must be given exactly when the index keeps them")
        writer = self._writer_for_add()
        writer.append(embeddings, rows, frames)
        total = writer.build_faiss(approximate=False)  # exact search until `vlrt embed` rebuilds an approximate one
        self._reload()
        return total

    def prune(self, *, compact: bool = True) -> int:
        """Drop the rows of files that no longer exist; returns how many. With `compact`, also
        rewrite the shards without dead rows. A part (`create(..., part=)`) drops only rows of
        its own files."""
        from vlrt.runtime.corpus import drop_deleted
        from vlrt.runtime.merge import recorded_part

        writer = self._writer_for_add()
        dropped = len(drop_deleted(writer, part=recorded_part(self.meta)))
        if compact:
            writer.compact()
        writer.build_faiss()
        self._reload()
        return dropped

    def compact(self) -> bool:
        """Rewrite the shards without replaced or dropped rows (see IndexWriter.compact)."""
        done = self._writer_for_add().compact()
        self._reload()
        return done

    def _writer_for_add(self) -> IndexWriter:
        if self._writer is None:
            self._writer = IndexWriter(self.root, bundle=None, manifest_sha256=self.meta["bundle_manifest_sha256"],
                                       embed_dim=int(self.meta["embed_dim"]))
        return self._writer

    def _runtime_for_add(self):
        """An opened index adds with the recorded engine, frame skipping, preprocessing mode,
        per-frame embeddings and part."""
        if self._add_runtime is None:
            from vlrt.runtime.merge import recorded_part
            from vlrt.runtime.runtime import Runtime

            encoder = self.meta.get("encoder") or {}
            bundle = self.bundle_path()
            key = self.engine["engine"]
            self._add_runtime = Runtime.load(bundle, backend=self._engine_backend(bundle) if key else None,
                                             engine=key, skip_similar=encoder.get("skip_similar"))
            self._embed_options = {"mode": encoder.get("mode", "exact"), "keep_frames": kept_frames(self.root, self.meta),
                                   "part": recorded_part(self.meta)}
            if self._runtime is None:  # the same engine encodes queries by default: no second load
                self._runtime = self._add_runtime
        return self._add_runtime

    def _reload(self) -> None:
        self.meta = read_meta(self.root)
        self._data = None
        self._drop_ann()
        self._frames = None
