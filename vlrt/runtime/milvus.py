"""Milvus as an index's vector search structure (`ann="milvus"`, `vlrt embed --ann milvus`).

The shards stay the source of truth; a Milvus collection replaces faiss.index, for a shared
service. Where it lives is recorded in index.json (meta["ann"]):

- `uri`: by default "milvus.db", Milvus Lite in INDEX/milvus.db (pymilvus runs it in this process;
  a local path is recorded relative to the index, so the index can move with it); or a server,
  "http://HOST:19530" (also https, tcp, unix), recorded as given.
- `collection`: by default "vlrt_videos" in the index's own Milvus Lite file, else "vlrt_" and 16
  hex digits of the sha256 of the index's absolute path (one collection per index on a shared
  server); recorded at creation, so it survives moves.

A build drops the collection and makes it again: one row per live row, id = its position in shard
order (the ids FAISS returns), the vector (IP metric, L2-normalised: the cosine), and `build`, a
random id also recorded in index.json. A search reads the store only when index.json's rows digest
matches the rows the Index loaded, and accepts hits only from that build: a store rebuilt or
changed since (another writer, another process) is never read as this Index's rows, and the
Index searches exactly instead (as with a stale faiss.index). So does an Index whose store cannot
be used (pymilvus missing, the server unreachable, the Lite store missing or held by another
process), with a warning logged; a build that cannot reach its store is a VlrtError. `Index.append`
does not rebuild the collection (as for HNSW and IVF-PQ): searches go exact until the next build.

Index type by size: FLAT (exact) below `IVF_FROM` vectors, else IVF_FLAT (nlist ≈ 4·√n, nprobe
`NPROBE`), which both Milvus Lite (2.4.11 and later) and Milvus servers build. Milvus returns at
most `MAX_TOPK` hits a query; larger searches run exactly.

Milvus Lite serves one process at a time (it locks its store): clients in one process share one
connection per URI, and the last `Store.close()` stops the in-process Lite server, so that another
process can open the store. A server URI goes to pymilvus as given, through the same calls; the
tests run Milvus Lite only.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.ann import HNSW_FROM

log = logging.getLogger(__name__)
# Milvus Lite logs a traceback when it cannot open its store; vlrt says so in one line instead
# (a VlrtError, or a warning), unless the application configured logging.
logging.getLogger("milvus_lite").addHandler(logging.NullHandler())

LITE = "milvus.db"  # Milvus Lite inside the index directory
COLLECTION = "vlrt_videos"  # the collection in that file
SERVER = re.compile(r"^(https?|tcp|unix):", re.IGNORECASE)
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")  # Milvus's rule for collection names
ID, BUILD, VECTOR = "id", "build", "vector"
IVF_FROM = HNSW_FROM  # below, FLAT: exact and fast enough
NPROBE = 32
MAX_TOPK = 16_384  # Milvus's limit on hits per query
INSERT_BYTES = 16 << 20  # of vectors per insert call: well under gRPC's 64 MB message limit
TIMEOUT_S = 30.0  # connecting to a server


def is_server(uri: str) -> bool:
    return bool(SERVER.match(uri))


def settings(root: Path, uri: str | None = None, collection: str | None = None) -> dict[str, str]:
    """What index.json records for a Milvus index at `root`: {"uri", "collection"}. `uri`: None
    (Milvus Lite in INDEX/milvus.db), a server URL, or a local Milvus Lite path ending in .db
    (relative to the working directory; recorded relative to the index). `collection`: None for
    the default (see the module docstring)."""
    if uri is None:
        recorded = LITE
    elif is_server(uri):
        recorded = uri
    elif uri.endswith(".db"):
        recorded = os.path.relpath(os.path.realpath(uri), os.path.realpath(root))
    else:
        raise VlrtError(f"--milvus-uri {uri}: give a Milvus server (http://HOST:19530) or a Milvus Lite file "
                        "ending in .db")
    if collection is None:
        collection = COLLECTION if recorded == LITE else \
            "vlrt_" + hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    if not NAME.match(collection):
        raise VlrtError(f"--milvus-collection {collection!r}: a Milvus collection name is letters, digits and "
                        "underscores, starts with a letter or underscore, and has at most 255 characters")
    return {"uri": recorded, "collection": collection}


def resolve(root: Path, recorded: str) -> str:
    """The URI to connect to: a server URL as recorded, a Milvus Lite path made absolute from
    the index directory."""
    return recorded if is_server(recorded) else os.path.realpath(Path(root) / recorded)


def require(uri: str) -> None:
    """VlrtError unless what `uri` needs can be imported: pymilvus, and milvus-lite for a local store."""
    try:
        import pymilvus  # noqa: F401
        if not is_server(uri):
            import milvus_lite  # noqa: F401
    except ImportError as exc:
        raise VlrtError(f"Milvus needs pymilvus, and milvus-lite for a local store ({exc.name} is missing): "
                        "pip install 'vlrt[milvus]'") from None


def index_type(n: int) -> tuple[str, dict[str, Any]]:
    """The Milvus index for n vectors and its build parameters."""
    if n < IVF_FROM:
        return "FLAT", {}
    return "IVF_FLAT", {"nlist": int(4 * math.sqrt(n))}


_clients: dict[str, list[Any]] = {}  # uri -> [MilvusClient, Stores using it]
_clients_lock = threading.Lock()


def _acquire(uri: str):
    with _clients_lock:
        entry = _clients.get(uri)
        if entry is None:
            entry = _clients[uri] = [_connect(uri), 0]
        entry[1] += 1
        return entry[0]


def _release(uri: str) -> None:
    with _clients_lock:
        entry = _clients[uri]
        entry[1] -= 1
        if entry[1]:
            return
        del _clients[uri]
    entry[0].close()
    if not is_server(uri):  # the in-process Lite server holds the file's lock until stopped
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _connect(uri: str):
    require(uri)
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri, timeout=TIMEOUT_S)
    except MilvusException as exc:
        if is_server(uri):
            raise VlrtError(f"cannot reach the Milvus server at {uri}: {exc.message}; start it, or give "
                            "another --milvus-uri") from None
        raise VlrtError(f"{uri}: cannot open this Milvus Lite store ({exc.message}); Milvus Lite serves one "
                        "process at a time: stop the other process using it (a `vlrt serve` or search of "
                        "this index), or use a Milvus server (--milvus-uri http://HOST:19530)") from None


class Store:
    """One collection, through the connection this process shares for its URI; `close()` when
    done (also a context manager)."""

    def __init__(self, uri: str, collection: str) -> None:
        self.uri, self.collection = uri, collection
        self.client = _acquire(uri)
        self.closed = False
        self.build: int | None = None  # the build whose hits `search` accepts (see the module docstring)
        self._search_params: dict[str, Any] = {}

    def close(self) -> None:
        with _clients_lock:  # once, however many threads searching it find it failed
            if self.closed:
                return
            self.closed = True
        _release(self.uri)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rebuild(self, vectors: np.ndarray) -> dict[str, Any]:
        """Drop the collection and make it again over `vectors` (n, D) float32, L2-normalised,
        ids = row positions; returns what index.json records of it: {"index_type", "build"}."""
        from pymilvus import DataType, MilvusClient
        from pymilvus.exceptions import MilvusException

        vectors = np.ascontiguousarray(vectors, np.float32)
        n, d = vectors.shape
        kind, params = index_type(n)
        build = secrets.randbits(62)
        c, name = self.client, self.collection
        try:
            if c.has_collection(name):
                c.drop_collection(name)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(ID, DataType.INT64, is_primary=True)
            schema.add_field(BUILD, DataType.INT64)
            schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=d)
            c.create_collection(name, schema=schema, consistency_level="Strong")  # searches see every insert
            step = max(1, INSERT_BYTES // (4 * d))
            for start in range(0, n, step):
                c.insert(name, [{ID: i, BUILD: build, VECTOR: v}
                                for i, v in enumerate(vectors[start:start + step], start)])
            c.flush(name)
            index_params = c.prepare_index_params()
            index_params.add_index(field_name=VECTOR, index_type=kind, metric_type="IP", params=params)
            c.create_index(name, index_params)
            c.load_collection(name)
        except MilvusException as exc:
            raise VlrtError(f"Milvus at {self.uri}: building collection {name} failed: {exc.message}") from None
        self._use(build, kind)
        return {"index_type": kind, "build": build}

    def load(self, build: int, kind: str) -> bool:
        """Make the collection searchable (a Milvus Lite store opened again starts released), for
        hits of `build` with index type `kind`, as index.json records them; False, with a warning
        logged, when it cannot be."""
        from pymilvus.exceptions import MilvusException

        try:
            self.client.load_collection(self.collection)
        except MilvusException as exc:
            log.warning("Milvus at %s: cannot load collection %s (%s); searching exactly", self.uri,
                        self.collection, exc.message)
            return False
        self._use(build, kind)
        return True

    def _use(self, build: int, kind: str) -> None:
        self.build = build
        self._search_params = {"nprobe": NPROBE} if kind == "IVF_FLAT" else {}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(scores (Q, k) float32, ids (Q, k) int64), best first, -1 ids (score -inf) where fewer
        than k were found; None when Milvus cannot answer: k over `MAX_TOPK`, or the store failed
        or holds another build (then this Store closes, and answers None from then on)."""
        from pymilvus.exceptions import MilvusException

        if self.closed or k > MAX_TOPK:
            return None
        queries = np.ascontiguousarray(queries, np.float32)
        try:
            found = self.client.search(self.collection, data=list(queries), limit=k, output_fields=[BUILD],
                                       search_params={"metric_type": "IP", "params": self._search_params},
                                       anns_field=VECTOR)
        except MilvusException as exc:
            log.warning("Milvus at %s: search in %s failed (%s); searching exactly", self.uri, self.collection,
                        exc.message)
            self.close()
            return None
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for q, hits in enumerate(found):
            if any(hit["entity"][BUILD] != self.build for hit in hits):  # rebuilt since index.json was read
                self.close()
                return None
            ids[q, :len(hits)] = [hit["id"] for hit in hits]
            scores[q, :len(hits)] = [hit["distance"] for hit in hits]
        return scores, ids


def open_store(root: Path, record: dict[str, Any]) -> Store | None:
    """The store index.json's `record` (meta["ann"]) names, loaded for searching; None, with a
    warning logged, when it cannot be used (pymilvus missing, the Milvus Lite file gone, the
    server unreachable, the collection missing)."""
    uri = resolve(root, record["uri"])
    if not is_server(uri) and not os.path.exists(uri):
        log.warning("%s: the Milvus Lite store is missing; searching exactly until `vlrt embed` builds it", uri)
        return None
    try:
        store = Store(uri, record["collection"])
    except VlrtError as exc:
        log.warning("%s; searching exactly", exc)
        return None
    if store.load(record["build"], record["index_type"]):
        return store
    store.close()
    return None
