"""A client for `vlrt serve`, on the standard library (urllib) and numpy only.

    from vlrt import Client
    client = Client("http://127.0.0.1:8080", api_key="...")
    texts = client.embed_text(["a red circle moves to the left"])  # (1, D) float32
    videos = client.embed_videos(["a.mp4", "b.mp4"])  # uploaded, several at a time: (2, D)
    hits = client.search("a red circle moves to the left", k=5)  # [{"rank", "path", "score"}, ...]

An answer other than 200 raises `ServiceError` (a `VlrtError`) with the status, the server's `kind`
and its `Retry-After`; a server that cannot be reached raises `VlrtError`.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

from vlrt.errors import VlrtError

Media = str | os.PathLike | bytes  # a local file (uploaded) or its bytes


class ServiceError(VlrtError):
    """The service answered with an error: `status` (HTTP), `kind` (its short name, e.g.
    "bad_request", "overloaded"), `retry_after` (seconds, from Retry-After; None without) and
    `body` (the JSON object it sent, or None)."""

    def __init__(self, message: str, *, status: int, kind: str | None = None, retry_after: float | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.retry_after, self.body = status, kind, retry_after, body


class Client:
    """`url`: the service's base URL; `api_key`: sent as `Authorization: Bearer KEY` when given;
    `timeout`: seconds per request."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise VlrtError(f"the service URL must start with http:// or https://, got {url!r}")
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r}, api_key={'set' if self.api_key else None})"

    # -- embeddings ----------------------------------------------------------------------------
    def embed_text(self, texts: str | list[str]) -> np.ndarray:
        """Texts -> (N, D) float32 L2-normalised embeddings (one row for a single string)."""
        body = self._json("POST", "/v1/embed/text", {"texts": [texts] if isinstance(texts, str) else list(texts)})
        return np.asarray(body["embeddings"], np.float32)  # (N, D)

    def embed_videos(self, paths_or_bytes: list[Media], *, concurrency: int = 8) -> np.ndarray:
        """Videos (local files, uploaded, or bytes) -> (N, D) float32 embeddings, in input order.
        One request per video, `concurrency` in flight at once so that the server batches them."""
        from concurrent.futures import ThreadPoolExecutor

        if concurrency < 1:
            raise VlrtError(f"concurrency must be >= 1, got {concurrency}")
        items = list(paths_or_bytes)
        if not items:
            return np.zeros((0, 0), np.float32)  # no request made, so no dimension known
        embed = lambda item: self._upload_json("/v1/embed/video", item)["embedding"]
        with ThreadPoolExecutor(min(concurrency, len(items))) as pool:
            return np.asarray(list(pool.map(embed, items)), np.float32)  # (N, D)

    def embed_image(self, path_or_bytes: Media) -> np.ndarray:
        """An image (a local file, uploaded, or bytes) -> (D,) float32 embedding."""
        return np.asarray(self._upload_json("/v1/embed/image", path_or_bytes)["embedding"], np.float32)

    # -- the index -------------------------------------------------------------------------------
    def search(self, text: str | None = None, *, vector: Any = None, video: Media | None = None,
               image: Media | None = None, k: int = 10) -> list[dict[str, Any]]:
        """The best k videos of the served index for exactly one query: a text, a (D,) vector, or
        a video or image (a local file, uploaded, or bytes) -> [{"rank", "path", "score"}, ...]."""
        given = {name: q for name, q in (("text", text), ("vector", vector), ("video", video), ("image", image))
                 if q is not None}
        if len(given) != 1:
            raise VlrtError(f"search needs exactly one of text, vector, video or image; got {sorted(given) or 'none'}")
        (name, query), = given.items()
        if name == "text":
            return self._json("POST", "/v1/search", {"text": query, "k": k})["results"]
        if name == "vector":
            return self._json("POST", "/v1/search", {"vector": np.asarray(query, np.float32).tolist(), "k": k})["results"]
        return self._upload_json("/v1/search", query, k=k)["results"]

    def add_videos(self, paths: list[str]) -> dict[str, Any]:
        """Add videos to the served index (a server started with --writable); `paths` are relative
        to the server's --media-root. -> {"added", "files": [{"path", "added", "error"?}], "total"}."""
        return self._json("POST", "/v1/index/videos", {"paths": list(paths)})

    # -- the service -----------------------------------------------------------------------------
    def health(self) -> bool:
        """Whether the service answers at all (loaded or not)."""
        try:
            self._request("GET", "/healthz")
        except VlrtError:
            return False
        return True

    def ready(self) -> dict[str, Any]:
        """/readyz's body, while loading (503) too: {"state": "ready" | "loading" | "failed: ...",
        "engine", "index"}."""
        try:
            return json.loads(self._request("GET", "/readyz"))
        except ServiceError as exc:
            if exc.status == 503 and exc.body and "state" in exc.body:
                return exc.body
            raise

    # -- requests -------------------------------------------------------------------------------
    def _json(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        return json.loads(self._request(method, path, data=data, content_type="application/json"))

    def _upload_json(self, path: str, item: Media, **query: Any) -> dict[str, Any]:
        """POST a file's bytes (`?name=` its base name, which tells the server its type) or raw bytes."""
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
        elif isinstance(item, (str, os.PathLike)):
            try:
                with open(item, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise VlrtError(f"{item}: cannot read it: {exc.strerror or exc}") from None
            query["name"] = os.path.basename(os.fspath(item))
        else:
            raise VlrtError(f"a video or image is a file path or bytes, not {type(item).__name__}")
        url = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        return json.loads(self._request("POST", url, data=data, content_type="application/octet-stream"))

    def _request(self, method: str, path: str, *, data: bytes | None = None, content_type: str | None = None) -> bytes:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise _service_error(method, path, exc) from None
        except urllib.error.URLError as exc:
            raise VlrtError(f"{self.url}: cannot reach the service: {exc.reason}") from None
        except TimeoutError:
            raise VlrtError(f"{method} {self.url}{path}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:  # the connection dropped mid-answer
            raise VlrtError(f"{method} {self.url}{path}: the connection failed: {exc or type(exc).__name__}") from None


def _service_error(method: str, path: str, exc: urllib.error.HTTPError) -> ServiceError:
    """The server's JSON {"error", "kind"} (or whatever it sent) as a ServiceError."""
    raw = exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason, kind = str(body.get("error") or exc.reason), body.get("kind")
    else:
        reason, kind, body = raw.decode("utf-8", "replace").strip()[:200] or str(exc.reason), None, None
    retry = exc.headers.get("Retry-After")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None  # an HTTP date: not sent by vlrt serve
    return ServiceError(f"{method} {path.split('?')[0]}: HTTP {exc.code}{f' ({kind})' if kind else ''}: {reason}",
                        status=exc.code, kind=kind, retry_after=retry_after, body=body)
