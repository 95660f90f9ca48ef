"""`vlrt serve`: the HTTP service (FastAPI on uvicorn).

`create_app(config)` returns the ASGI app. The engine and index load in the background at
start-up (`/readyz` answers 503 until they are loaded; `/healthz` answers at once). Texts and
videos go through separate batching queues (vlrt/serve/batching.py); uploads are decoded by a
pool of worker processes with a memory cap (vlrt/serve/media.py), never in the server process.
Every request leaves one JSON log line (logger `vlrt.serve`) with its latency per stage.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from vlrt.constants import MEDIA_SUFFIXES
from vlrt.errors import VlrtError
from vlrt.serve.batching import Batcher, Overloaded
from vlrt.serve.config import ServeConfig
from vlrt.serve.media import DecodePool, MediaError, MediaLimits
from vlrt.serve.metrics import Metrics

log = logging.getLogger("vlrt.serve")
PAGE = Path(__file__).with_name("static") / "index.html"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})  # no API key needed


class ApiError(Exception):
    """An answer other than 200: `status`, a short `kind` (metrics, clients) and the reason."""

    def __init__(self, status: int, kind: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.headers = status, kind, reason, headers or {}


class Service:
    """What the endpoints share: the runtime, the index, the queues and the decode pool."""

    def __init__(self, config: ServeConfig, metrics: Metrics, batcher: type[Batcher] = Batcher) -> None:
        self.config, self.metrics, self.batcher = config, metrics, batcher
        self.runtime: Any = None
        self.index: Any = None
        self.state = "loading"
        self.settled = threading.Event()  # set once loading has ended, ready or failed (for embedders and tests)
        self.pool: DecodePool | None = None
        self.text: Batcher | None = None
        self.video: Batcher | None = None
        self.spool = Path(tempfile.mkdtemp(prefix="vlrt-serve-"))
        self.search_lock = threading.Lock()  # a search never sees the index half reloaded
        self.add_lock = asyncio.Lock()
        self.paths: set[str] = set()  # the index's videos: the only files /v1/poster and /v1/media serve
        self.keep_frames = False
        self.decoding = 0  # requests at a decode worker or waiting for one
        self.media_root = Path(config.media_root).resolve() if config.media_root else None

    # -- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        finally:
            self.settled.set()

    async def _start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log, the process stays up
            self.state = f"failed: {exc}"
            log.error(json.dumps({"event": "load_failed", "error": str(exc)}))
            return
        c = self.config
        limits = MediaLimits(max_bytes=int(c.max_upload_mb * 2**20), max_duration_s=c.max_duration_s,
                             max_width=c.max_width, max_height=c.max_height, max_frames=c.max_frames,
                             worker_memory_mb=c.worker_memory_mb, timeout_s=c.request_timeout_s)
        mode = ((self.index.meta.get("encoder") or {}).get("mode", "exact")) if self.index is not None else "exact"
        self.pool = DecodePool(self.runtime.bundle.manifest, workers=c.decode_workers, limits=limits, mode=mode)
        self.text = self.batcher("text", self._encode_texts, max_batch=c.text_batch, max_wait_s=c.text_wait_ms / 1000,
                            max_queue=c.text_queue, observe=self._observer("text"))
        self.video = self.batcher("video", self._encode_clips, max_batch=c.video_batch, max_wait_s=c.video_wait_ms / 1000,
                             max_queue=c.video_queue, observe=self._observer("video"))
        self.text.start()
        self.video.start()
        self.state = "ready"
        log.info(json.dumps({"event": "ready", "engine": self.runtime.engine_info,
                             "index": len(self.paths) if self.index is not None else None}))

    def _load(self) -> None:
        from vlrt.runtime.index import Index, kept_frames
        from vlrt.runtime.runtime import Runtime

        c = self.config
        if c.index is not None:
            self.index = Index.open(c.index, bundle=c.bundle)
            self.runtime = self.index.runtime(engine=c.engine, threads=c.threads)
            if c.writable:
                encoder = self.index.meta.get("encoder") or {}
                if encoder.get("skip_similar") is not None:
                    raise VlrtError(f"{c.index}: embedded with frame skipping, which the server does not run; "
                                    "add to it with `vlrt embed`, or serve it without --writable")
                if self.runtime.engine_info["engine"] != self.index.engine["engine"]:
                    raise VlrtError(f"{c.index}: videos added must be encoded by the engine the index was "
                                    f"embedded with ({self.index.engine['engine'] or 'fp32 graphs'}), not {c.engine}")
                self.keep_frames = kept_frames(self.index.root, self.index.meta)
                self.index.hold_write_lock()
            self.paths = set(self.index.paths)
            self.metrics.index_size.set(len(self.paths))
        else:
            self.runtime = Runtime.load(c.bundle, engine=c.engine, threads=c.threads)
        # the first call of each session and the first search pay one-time costs: not a client's
        self.runtime.encode_text(["warm-up"])
        size = self.runtime.bundle.image_size
        self.runtime.encode_frames(np.zeros((1, 1, 3, size, size), np.float32))
        if self.index is not None and len(self.index):
            self.index.search(self.index.embeddings[0], k=1)

    async def stop(self) -> None:
        for batcher in (self.text, self.video):
            if batcher is not None:
                await batcher.stop()
        if self.pool is not None:
            self.pool.close()
        if self.index is not None:
            self.index.close()
        shutil.rmtree(self.spool, ignore_errors=True)

    def ready(self) -> None:
        if self.state != "ready":
            raise ApiError(503, "not_ready", f"the service is {self.state}", {"Retry-After": "1"})

    def _observer(self, queue: str):
        def observe(size: int, seconds: float) -> None:
            self.metrics.batch_size.labels(queue).observe(size)
        return observe

    # -- the encoder thread's side -------------------------------------------------------------
    def _encode_texts(self, batches: list[list[str]]) -> list[np.ndarray]:
        flat = [t for texts in batches for t in texts]
        vectors = self.runtime.encode_text(flat)
        out, at = [], 0
        for texts in batches:
            out.append(vectors[at:at + len(texts)])
            at += len(texts)
        return out

    def _encode_clips(self, clips: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        from vlrt.runtime.pipeline import prefix_mask

        pixels = np.stack([c.pixels for c in clips])
        mask = prefix_mask([c.n_frames for c in clips], pixels.shape[1])
        video, frames = self.runtime.encode_frames(pixels, mask, batch_size=len(clips), return_frames=True)
        return list(zip(video, frames))

    # -- work, on the event loop -----------------------------------------------------------
    async def embed_texts(self, texts: list[str], stages: dict[str, float]) -> np.ndarray:
        self.ready()
        done = await self.text.submit(texts)
        stages["queue"] = stages.get("queue", 0.0) + done.queued_s
        stages["encode"] = stages.get("encode", 0.0) + done.encode_s
        return done.result

    async def embed_file(self, path: Path, stages: dict[str, float]) -> tuple[np.ndarray, np.ndarray, Any]:
        """A video or image file -> (embedding, per-frame embeddings, what the decoder saw)."""
        self.ready()
        limit = self.config.decode_workers + self.config.video_queue
        if self.decoding >= limit:  # uploads waiting for a decode worker are bounded too
            raise Overloaded("decode", self.decoding, max(1.0, self.video.retry_after()))
        t0 = time.perf_counter()
        self.decoding += 1
        try:
            clip = await self.pool.clip(str(path))
        except MediaError as exc:  # an upload's spool file is nothing the client knows: name it so
            if path.parent == self.spool:
                raise MediaError(exc.reason.replace(str(path), "the upload"), status=exc.status,
                                 kind=exc.kind) from None
            raise
        finally:
            self.decoding -= 1
            self.metrics.worker_restarts.set(self.pool.restarts)
        stages["decode"] = clip.seconds  # in the worker; the wait for a free worker counts as queueing
        stages["queue"] = max(0.0, time.perf_counter() - t0 - clip.seconds)
        done = await self.video.submit(clip)
        stages["queue"] = stages.get("queue", 0.0) + done.queued_s
        stages["encode"] = stages.get("encode", 0.0) + done.encode_s
        vector, frames = done.result
        return vector, frames, clip

    async def search(self, query: np.ndarray | str, k: int, stages: dict[str, float], *, frames: int | None = None,
                     rerank: int | None = None) -> list[dict[str, Any]]:
        """A query vector, or a text for a multi-grained model (its scorer needs the text's own
        features; the text is encoded on the search thread, not batched)."""
        if self.index is None:
            raise ApiError(409, "no_index", "this server has no index to search (start it with --index DIR)")
        t0 = time.perf_counter()
        if not isinstance(query, str):
            query = np.asarray(query, np.float32)

        def run() -> list[tuple[str, float]]:
            with self.search_lock:
                if not len(self.index):
                    return []
                try:
                    return self.index.search(query, k=k, frames=frames, rerank=rerank)
                except VlrtError as exc:
                    raise ApiError(400, "bad_request", str(exc)) from None
        hits = await asyncio.to_thread(run)
        stages["search"] = time.perf_counter() - t0
        return [{"rank": r, "path": p, "score": round(s, 6)} for r, (p, s) in enumerate(hits, 1)]

    async def add_to_index(self, files: list[Path], stages: dict[str, float]) -> list[dict[str, Any]]:
        """Decode and encode `files` (in parallel, through the pool and the video queue), then commit
        them to the index as one shard; a file that fails is reported, the others are added."""
        results = await asyncio.gather(*(self.embed_file(f, {}) for f in files), return_exceptions=True)
        rows, vectors, frames, report = [], [], [], []
        for f, res in zip(files, results):
            if isinstance(res, BaseException):
                if not isinstance(res, (MediaError, VlrtError, ApiError)):
                    raise res
                report.append({"path": str(f), "added": False, "error": getattr(res, "reason", str(res))})
                continue
            vector, per_frame, clip = res
            st = f.stat()
            rows.append({**clip.row, "path": str(f), "file_size": st.st_size, "mtime_ns": st.st_mtime_ns})
            vectors.append(vector)
            frames.append(per_frame)
            report.append({"path": str(f), "added": True})
        if rows:
            t0 = time.perf_counter()
            async with self.add_lock:
                def commit() -> int:
                    with self.search_lock:
                        return self.index.append(np.stack(vectors), rows,
                                                 np.stack(frames) if self.keep_frames else None)
                total = await asyncio.to_thread(commit)
                self.paths.update(r["path"] for r in rows)
            self.metrics.index_size.set(total)
            stages["index"] = time.perf_counter() - t0
        return report

    # -- files from clients ------------------------------------------------------------------
    def media_path(self, given: str) -> Path:
        """A client-named file: only under --media-root, never outside it (no `..`, no absolute
        path, no symlink that leads out)."""
        if self.media_root is None:
            raise ApiError(403, "paths_disabled", "this server takes no file paths (start it with --media-root DIR); "
                           "upload the file instead")
        if not isinstance(given, str) or not given or "\x00" in given:
            raise ApiError(400, "bad_path", "a path must be a non-empty string")
        rel = Path(given)
        if rel.is_absolute() or ".." in rel.parts:
            raise ApiError(403, "path_outside", f"{given!r}: paths are relative to the media root, without '..'")
        full = (self.media_root / rel).resolve()
        if not full.is_relative_to(self.media_root):
            raise ApiError(403, "path_outside", f"{given!r} leads outside the media root")
        if not full.is_file():
            raise ApiError(404, "not_found", f"{given!r}: no such file under the media root")
        return full

    async def receive_upload(self, request: Request, digest: Any = None) -> Path:
        """The request body, streamed to a file in the spool directory, refused (413) past the
        upload limit before it is all read. The file's suffix comes from `?name=`. `digest` (a
        hashlib object) is fed the bytes as they arrive."""
        limit = int(self.config.max_upload_mb * 2**20)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, "too_large", f"the upload is {int(length)} bytes; the limit is {limit}")
        suffix = Path(request.query_params.get("name", "")).suffix.lower()
        fd, name = tempfile.mkstemp(suffix=suffix if suffix in MEDIA_SUFFIXES else "", dir=self.spool)
        path, total = Path(name), 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit:
                        raise ApiError(413, "too_large", f"the upload is over the limit of {limit} bytes")
                    fh.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
            if total == 0:
                raise ApiError(400, "empty", "the upload is empty")
        except ClientDisconnect:
            path.unlink(missing_ok=True)
            raise ApiError(499, "client_gone", "the client went away during the upload") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


def log_requests() -> None:
    """The service's log lines (one JSON object each) to stderr, as they are."""
    if any(getattr(h, "vlrt_requests", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.vlrt_requests = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def create_app(config: ServeConfig, *, batcher: type[Batcher] = Batcher, load_first: bool = False) -> FastAPI:
    """The service's ASGI app. `batcher`: the batching queue class (Ray Serve replicas pass one
    built on `@serve.batch`); `load_first`: start-up waits until the engine and index are loaded,
    and fails if they cannot be (a replica is then not started), instead of serving 503 meanwhile."""
    metrics = Metrics()
    service = Service(config, metrics, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.start())
        if load_first:
            await loading
            if service.state != "ready":
                await service.stop()
                raise VlrtError(f"vlrt serve: {service.state}")
        yield
        await loading
        await service.stop()

    app = FastAPI(title="vlrt", version=_version(), lifespan=lifespan,
                  description="Video-text retrieval: embed texts, videos and images; search an index.")
    app.state.service = service

    @app.middleware("http")
    async def frame(request: Request, call_next):
        """API key, one JSON log line and the metrics of every request."""
        t0 = time.perf_counter()
        request.state.stages = {}
        endpoint = request.url.path if request.url.path.startswith("/v1/") or request.url.path in OPEN_PATHS \
            or request.url.path == "/metrics" else "other"
        if config.api_key and request.url.path not in OPEN_PATHS and not _key_ok(request, config.api_key):
            response = _error_response(ApiError(401, "unauthorized", "a valid API key is required "
                                                "(Authorization: Bearer KEY, or X-API-Key)"))
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - a bug answers 500 and is logged with its traceback
                log.exception("unhandled error")
                response = _error_response(ApiError(500, "internal", f"internal error: {type(exc).__name__}"))
        took = time.perf_counter() - t0
        kind = getattr(request.state, "error_kind", None) or ("unauthorized" if response.status_code == 401 else None)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(took)
        if kind:
            metrics.errors.labels(kind).inc()
        for stage, seconds in request.state.stages.items():
            if stage in ("queue", "decode", "encode", "search"):
                metrics.stage.labels(stage).observe(seconds)
        if endpoint not in ("/healthz", "/metrics"):
            line = {"method": request.method, "path": request.url.path, "status": response.status_code,
                    "ms": round(took * 1000, 2), "stages_ms": {k: round(v * 1000, 2) for k, v in request.state.stages.items()}}
            if kind:
                line["error"] = kind
            log.info(json.dumps(line))
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        request.state.error_kind = exc.kind
        return _error_response(exc)

    async def guarded(request: Request, work):
        """Run `work` (a coroutine) under the request timeout; a client that disconnects cancels it."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=config.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task in done:
            try:
                return task.result()
            except Overloaded as exc:
                raise ApiError(429, "overloaded", str(exc), {"Retry-After": str(int(exc.retry_after + 0.999))}) from None
            except MediaError as exc:
                raise ApiError(exc.status, exc.kind, exc.reason) from None
            except VlrtError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if gone in done:
            raise ApiError(499, "client_gone", "the client went away")
        raise ApiError(504, "timeout", f"the request took longer than {config.request_timeout_s:g} s")

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        return body

    def engine_key() -> str | None:
        return service.runtime.engine_info["engine"] if service.runtime is not None else None

    async def upload_or_path(request: Request) -> tuple[Path, bool]:
        """(file, uploaded): a JSON {"path": ...} under the media root, or the body's bytes."""
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await json_body(request)
            return service.media_path(body.get("path")), False
        return await service.receive_upload(request), True

    async def embed_one(request: Request) -> dict[str, Any]:
        path, uploaded = await upload_or_path(request)
        try:
            vector, _, clip = await guarded(request, service.embed_file(path, request.state.stages))
        finally:
            if uploaded:
                path.unlink(missing_ok=True)
        meta = {k: v for k, v in clip.row.items() if k != "path"}
        return {"embedding": vector.tolist(), "dim": int(vector.shape[0]), "frames": clip.n_frames,
                "media": meta, "engine": engine_key()}

    @app.get("/healthz")
    async def healthz():
        """Alive: answers as soon as the process serves, loaded or not."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Ready: the engine is loaded (and the index open, when one is served)."""
        body = {"state": service.state, "engine": service.runtime.engine_info if service.state == "ready" else None,
                "index": len(service.paths) if service.index is not None else None}
        return JSONResponse(body, status_code=200 if service.state == "ready" else 503)

    @app.get("/metrics")
    async def prometheus():
        if service.text is not None:
            metrics.queue_depth.labels("text").set(service.text.depth)
            metrics.queue_depth.labels("video").set(service.video.depth)
            metrics.queue_depth.labels("decode").set(service.decoding)
        if service.pool is not None:
            metrics.worker_restarts.set(service.pool.restarts)
            metrics.decode_busy.set(service.pool.busy)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/embed/text")
    async def embed_text(request: Request):
        """Body {"texts": ["...", ...]} -> {"embeddings": [[...], ...]} (L2-normalised)."""
        body = await json_body(request)
        texts = body.get("texts")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "bad_request", '"texts" must be a non-empty list of strings')
        if len(texts) > config.max_texts:
            raise ApiError(413, "too_many", f"{len(texts)} texts; at most {config.max_texts} per request")
        vectors = await guarded(request, service.embed_texts(texts, request.state.stages))
        return {"embeddings": vectors.tolist(), "dim": int(vectors.shape[1]), "engine": engine_key()}

    @app.post("/v1/embed/video")
    async def embed_video(request: Request):
        """The video's bytes as the body (`?name=clip.mp4` gives its type), or {"path": "rel/path"}
        under the media root -> {"embedding": [...], "frames": sampled frames, "media": what was decoded}."""
        return await embed_one(request)

    @app.post("/v1/embed/image")
    async def embed_image(request: Request):
        """An image's bytes as the body (`?name=photo.jpg`), or {"path": ...} under the media root ->
        its embedding (the video encoder on a one-frame clip)."""
        return await embed_one(request)

    @app.post("/v1/search")
    async def search(request: Request):
        """JSON {"text": "..."} or {"vector": [...]} or {"path": "..."} (under the media root), with
        "k" (default 10); or a video's or image's bytes as the body with `?k=&name=`. Optional
        "frames": K scores by each video's K best-matching frames (an index with per-frame
        embeddings), "rerank": N only over the N best by video embedding (for a multi-grained
        model's index, a text is scored by the model's scorer, over every video or the N best) ->
        {"results": [{"rank", "path", "score"}], "engine"}."""
        stages = request.state.stages
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await json_body(request)
            k = _k(body.get("k", 10), config.max_k)
            options = {o: _optional_int(body.get(o), o) for o in ("frames", "rerank")}
            given = [key for key in ("text", "vector", "path") if body.get(key) is not None]
            if len(given) != 1:
                raise ApiError(400, "bad_request", 'give exactly one of "text", "vector" or "path"')
            if given[0] == "text":
                text = body["text"]
                if not isinstance(text, str) or not text.strip():
                    raise ApiError(400, "bad_request", '"text" must be a non-empty string')
                if service.runtime.multi_vector and service.index is not None:
                    vector = text  # scored by the model's scorer, from the text's own features
                else:
                    vector = (await guarded(request, service.embed_texts([text], stages)))[0]
            elif given[0] == "vector":
                vector = _vector(body["vector"], service)
            else:
                path = service.media_path(body["path"])
                vector = (await guarded(request, service.embed_file(path, stages)))[0]
        else:
            k = _k(request.query_params.get("k", 10), config.max_k)
            options = {o: _optional_int(request.query_params.get(o), o) for o in ("frames", "rerank")}
            path = await service.receive_upload(request)
            try:
                vector = (await guarded(request, service.embed_file(path, stages)))[0]
            finally:
                path.unlink(missing_ok=True)
        results = await service.search(vector, k, stages, frames=options["frames"], rerank=options["rerank"])
        return {"results": results, "k": k, "engine": engine_key(), **{o: v for o, v in options.items() if v}}

    @app.post("/v1/index/videos")
    async def index_videos(request: Request):
        """Add videos to the served index (a server started with --writable): JSON {"paths": [...]}
        under the media root, or one video's bytes as the body (`?name=clip.mp4`), kept in the
        upload directory under its sha256. Searchable when this answers."""
        if not config.writable or service.index is None:
            raise ApiError(403, "read_only", "this server's index is read-only (start it with --index DIR --writable)")
        service.ready()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await json_body(request)
            paths = body.get("paths")
            if not isinstance(paths, list) or not paths or len(paths) > config.video_queue:
                raise ApiError(400, "bad_request", f'"paths" must be a list of 1 to {config.video_queue} paths')
            files = [service.media_path(p) for p in paths]
        else:
            files = [await _keep_upload(service, request)]
        report = await guarded(request, service.add_to_index(files, request.state.stages))
        return {"added": sum(r["added"] for r in report), "files": report, "total": len(service.paths)}

    @app.get("/v1/poster")
    async def poster(request: Request, path: str):
        """A JPEG of the middle frame of an indexed video (only videos in the index are served)."""
        if path not in service.paths:
            raise ApiError(404, "not_found", "not a video of this index")
        data = await guarded(request, service.pool.poster(path))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/media")
    async def media(path: str):
        """An indexed video's file, for playback (only videos in the index are served)."""
        if path not in service.paths or not Path(path).is_file():
            raise ApiError(404, "not_found", "not a video of this index")
        return FileResponse(path)

    page_html = PAGE.read_text() if PAGE.is_file() else None

    @app.get("/", include_in_schema=False)
    async def page():
        if page_html is None:
            raise ApiError(404, "not_found", "the search page is not installed")
        return HTMLResponse(page_html)

    return app


async def _keep_upload(service: Service, request: Request) -> Path:
    """An upload added to the index is kept: received, then moved to the upload directory, named
    by its sha256."""
    digest = hashlib.sha256()
    path = await service.receive_upload(request, digest)
    folder = Path(service.config.upload_dir or Path(service.config.index) / "uploads").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{digest.hexdigest()}{path.suffix}"
    if kept.exists():
        path.unlink()
    else:
        os.replace(path, kept)
    return kept


def _k(raw: Any, limit: int) -> int:
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_request", f"k must be an integer, got {raw!r}") from None
    if not 1 <= k <= limit:
        raise ApiError(400, "bad_request", f"k must be between 1 and {limit}, got {k}")
    return k


def _optional_int(raw: Any, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_request", f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ApiError(400, "bad_request", f"{name} must be >= 1, got {value}")
    return value


def _vector(raw: Any, service: Service) -> np.ndarray:
    service.ready()
    dim = service.runtime.embed_dim
    try:
        vector = np.asarray(raw, np.float32)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.shape != (dim,) or not np.isfinite(vector).all():
        raise ApiError(400, "bad_request", f'"vector" must be {dim} finite numbers')
    return vector


def _key_ok(request: Request, key: str) -> bool:
    import hmac

    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), key.encode())


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.reason, "kind": exc.kind}, status_code=exc.status, headers=exc.headers)


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _version() -> str:
    from vlrt import __version__

    return __version__
