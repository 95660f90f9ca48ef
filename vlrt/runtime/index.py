"""An embedding index on disk: append-only shards that merge, plus a FAISS index over them.

Layout of an index directory:
    index.json                what made it: the bundle (path, manifest hash), embed dim, version
    shards/NNNNNN.npy         (n, D) float32 L2-normalised video embeddings
    shards/NNNNNN.frames.npy  (n, T, D) float16 per-frame embeddings, when kept
    shards/NNNNNN.jsonl       one JSON line per row: path, frames used, and what the decoder saw
    errors.jsonl              files that could not be embedded, with the reason (append-only)
    faiss.index               inner-product index over all shards, in shard order

A shard's .jsonl is written last, by rename: a shard without it is an interrupted write and is
discarded on open, so a killed job loses at most the shard in flight and duplicates nothing.
Nothing depends on one process's memory: shards from several workers merge by listing them.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError

INDEX_VERSION = 1
SHARD = re.compile(r"^(\d{6})\.jsonl$")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _describe(encoder: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(encoder.items()))


class IndexWriter:
    """Appends shards to an index directory; reopening continues where the last run stopped."""

    def __init__(self, root: str | Path, *, bundle: Path, manifest_sha256: str, embed_dim: int,
                 encoder: dict[str, Any] | None = None) -> None:
        """`encoder`: how the embeddings are made (engine, frame skipping, preprocessing mode);
        a resumed run must make them the same way."""
        self.root = Path(root)
        self.shards = self.root / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        meta = {"version": INDEX_VERSION, "bundle": str(Path(bundle).resolve()),
                "bundle_manifest_sha256": manifest_sha256, "embed_dim": embed_dim}
        if encoder is not None:
            meta["encoder"] = encoder
        self._check_or_write_meta(meta)
        self._discard_partial()
        self.next_shard = 1 + max((int(m.group(1)) for m in self._shard_matches()), default=-1)

    def _check_or_write_meta(self, meta: dict[str, Any]) -> None:
        path = self.root / "index.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("bundle_manifest_sha256") != meta["bundle_manifest_sha256"]:
                raise VlrtError(f"{self.root}: this index was built with another bundle ({old.get('bundle')}); "
                                "embeddings from two models cannot share an index — use a new output directory")
            if "encoder" in old and "encoder" in meta and old["encoder"] != meta["encoder"]:
                raise VlrtError(f"{self.root}: this index was embedded with {_describe(old['encoder'])}, not "
                                f"{_describe(meta['encoder'])}; resume with the same options, or use a new output "
                                "directory")
            return
        _atomic_write(path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))

    def _shard_matches(self) -> Iterator[re.Match]:
        return (m for p in self.shards.iterdir() if (m := SHARD.match(p.name)))

    def _discard_partial(self) -> None:
        complete = {m.group(1) for m in self._shard_matches()}
        for p in self.shards.iterdir():
            if p.name.startswith(".") or p.name.split(".")[0] not in complete:
                p.unlink()

    def done_paths(self) -> set[str]:
        return {row["path"] for row in iter_rows(self.root)}

    def append(self, embeddings: np.ndarray, rows: Sequence[dict[str, Any]],
               frames: np.ndarray | None = None) -> None:
        if len(embeddings) != len(rows):
            raise ValueError("one metadata row per embedding")
        if not rows:
            return
        stem = f"{self.next_shard:06d}"
        _atomic_write(self.shards / f"{stem}.npy", lambda fh: np.save(fh, embeddings.astype(np.float32)))
        if frames is not None:
            _atomic_write(self.shards / f"{stem}.frames.npy", lambda fh: np.save(fh, frames.astype(np.float16)))
        lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
        _atomic_write(self.shards / f"{stem}.jsonl", lambda fh: fh.write(lines))  # commits the shard
        self.next_shard += 1

    def report_error(self, path: str, reason: str) -> None:
        with open(self.root / "errors.jsonl", "a") as fh:
            fh.write(json.dumps({"path": path, "error": reason}) + "\n")

    def build_faiss(self) -> int:
        """(Re)build faiss.index over every shard; returns the row count."""
        import faiss

        emb, _ = load_shards(self.root)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        tmp = self.root / ".faiss.index.tmp"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, self.root / "faiss.index")
        return index.ntotal


def _stems(root: Path) -> list[str]:
    shards = root / "shards"
    return sorted(m.group(1) for p in shards.iterdir() if (m := SHARD.match(p.name))) if shards.is_dir() else []


def iter_rows(root: Path) -> Iterator[dict[str, Any]]:
    for stem in _stems(root):
        with open(root / "shards" / f"{stem}.jsonl") as fh:
            yield from (json.loads(line) for line in fh if line.strip())


def load_shards(root: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    stems = _stems(root)
    arrays = [np.load(root / "shards" / f"{s}.npy") for s in stems]
    rows = list(iter_rows(root))
    dim = int(json.loads((root / "index.json").read_text())["embed_dim"])
    emb = np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32)
    if len(emb) != len(rows):
        raise VlrtError(f"{root}: shards hold {len(emb)} embeddings but {len(rows)} metadata rows; the index is damaged")
    return emb, rows


class Index:
    """A read-only view of an index directory; `search` encodes the query with the index's bundle."""

    def __init__(self, root: Path, meta: dict[str, Any], embeddings: np.ndarray, rows: list[dict[str, Any]]) -> None:
        self.root = root
        self.meta = meta
        self.embeddings = embeddings
        self.rows = rows
        self._faiss = None
        self._runtime = None

    @classmethod
    def open(cls, path: str | Path) -> "Index":
        root = Path(path)
        meta_path = root / "index.json"
        if not meta_path.is_file():
            raise VlrtError(f"{root}: not a vlrt index (no index.json); make one with `vlrt embed`")
        meta = json.loads(meta_path.read_text())
        emb, rows = load_shards(root)
        return cls(root, meta, emb, rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.rows]

    def runtime(self, **options: Any):
        if self._runtime is None:
            from vlrt.runtime.runtime import Runtime

            self._runtime = Runtime.load(self.meta["bundle"], **options)
        return self._runtime

    def search(self, query: str | np.ndarray, *, k: int = 10) -> list[tuple[str, float]]:
        """Best k videos for a text (or a (D,) query embedding): [(path, cosine), ...], best first."""
        if k < 1:
            raise VlrtError(f"k must be >= 1, got {k}")
        vec = self.runtime().encode_text([query]) if isinstance(query, str) else np.asarray(query, np.float32)[None]
        scores, ids = self._search(vec.astype(np.float32), min(k, len(self)))
        return [(self.rows[i]["path"], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k == 0:
            return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), np.int64)
        index = self._load_faiss()
        return index.search(queries, k)

    def _load_faiss(self):
        import faiss

        if self._faiss is None:
            path = self.root / "faiss.index"
            index = faiss.read_index(str(path)) if path.is_file() else None
            if index is None or index.ntotal != len(self.rows):
                # Stale or missing (an interrupted embed): rebuild in memory from the shards.
                index = faiss.IndexFlatIP(self.embeddings.shape[1])
                index.add(self.embeddings)
            self._faiss = index
        return self._faiss
