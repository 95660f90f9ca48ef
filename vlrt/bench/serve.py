"""Load on a running `vlrt serve`: a bounded concurrent client (threads, one keep-alive
connection each; every loop bounded in requests and in seconds).

`text_latency` measures query latency at a given concurrency, `video_throughput` uploads video
files from many clients at once, `batch_stats` reads the batch sizes the server formed from its
/metrics, `overload` sends more than the server can take and counts the answers.
"""
from __future__ import annotations

import concurrent.futures as cf
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class _Conn:
    """One keep-alive HTTP connection; reconnects after the server closed it."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
                ) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _drive(url: str, clients: int, requests: int, seconds: float, send: Callable[[_Conn, int], int], *,
           api_key: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """`clients` threads share a budget of `requests` calls of `send(conn, i) -> status`, stopping at
    `seconds`; per call: latency and status ("error" for a connection failure)."""
    lock, counter = threading.Lock(), iter(range(requests))
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    statuses: Counter = Counter()

    def worker() -> None:
        conn = _Conn(url, api_key, timeout)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    status = send(conn, i)
                except OSError:
                    status = "error"
                took = time.perf_counter() - t0
                with lock:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(took)
        finally:
            conn.close()

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    pct = {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) if len(ms) else None for q in (50, 95, 99)}
    return {"clients": clients, "ok": len(latencies), "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "seconds": round(wall, 3), "per_s": round(len(latencies) / wall, 3) if wall > 0 else None, **pct}


def text_latency(url: str, queries: Sequence[str], *, clients: int, requests: int, seconds: float = 60.0,
                 k: int = 10, api_key: str | None = None) -> dict[str, Any]:
    """POST /v1/search {"text": ..., "k"} from `clients` concurrent clients."""
    def send(conn: _Conn, i: int) -> int:
        body = json.dumps({"text": queries[i % len(queries)], "k": k}).encode()
        return conn.request("POST", "/v1/search", body, "application/json")[0]
    return _drive(url, clients, requests, seconds, send, api_key=api_key)


def video_throughput(url: str, files: Sequence[str | Path], *, clients: int, requests: int, seconds: float = 120.0,
                     api_key: str | None = None) -> dict[str, Any]:
    """POST /v1/embed/video with each file's bytes, from `clients` concurrent clients."""
    blobs = [(Path(f).name, Path(f).read_bytes()) for f in files]

    def send(conn: _Conn, i: int) -> int:
        name, data = blobs[i % len(blobs)]
        return conn.request("POST", f"/v1/embed/video?name={urllib.parse.quote(name)}", data,
                            "application/octet-stream")[0]
    out = _drive(url, clients, requests, seconds, send, api_key=api_key)
    out["videos_per_s"] = out.pop("per_s")
    return out


def overload(url: str, queries: Sequence[str], files: Sequence[str | Path], *, clients: int, seconds: float,
             api_key: str | None = None) -> dict[str, Any]:
    """Texts and videos together from `clients` clients for `seconds` (no request budget beyond
    the time): the answers by status."""
    blobs = [(Path(f).name, Path(f).read_bytes()) for f in files]

    def send(conn: _Conn, i: int) -> int:
        if i % 2:
            body = json.dumps({"text": queries[i % len(queries)], "k": 5}).encode()
            return conn.request("POST", "/v1/search", body, "application/json")[0]
        name, data = blobs[i % len(blobs)]
        return conn.request("POST", f"/v1/embed/video?name={urllib.parse.quote(name)}", data,
                            "application/octet-stream")[0]
    return _drive(url, clients, 10**9, seconds, send, api_key=api_key)


def metrics(url: str, api_key: str | None = None) -> str:
    conn = _Conn(url, api_key, 30.0)
    try:
        status, body = conn.request("GET", "/metrics")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    return body.decode()


def histogram(text: str, metric: str, label: str, value: str) -> dict[str, Any]:
    """One series of a Prometheus histogram from /metrics text: {"count", "sum", "buckets":
    {le: cumulative count}} (zeros when the series is absent)."""
    out: dict[str, Any] = {"count": 0.0, "sum": 0.0, "buckets": {}}
    for line in text.splitlines():
        if not line.startswith(metric + "_") or f'{label}="{value}"' not in line:
            continue
        name, number = line.rsplit(" ", 1)
        kind = name[len(metric) + 1:].split("{")[0]
        if kind in ("count", "sum"):
            out[kind] = float(number)
        elif kind == "bucket":
            out["buckets"][name.split('le="')[1].split('"')[0]] = float(number)
    return out


def _minus(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {"count": after["count"] - before["count"], "sum": after["sum"] - before["sum"],
            "buckets": {le: n - before["buckets"].get(le, 0.0) for le, n in after["buckets"].items()}}


def _batches(h: dict[str, Any]) -> dict[str, Any]:
    per_bucket, below = {}, 0.0
    for le, cumulative in h["buckets"].items():  # cumulative counts, in increasing le
        if cumulative > below:
            per_bucket[f"<={le}"] = int(cumulative - below)
        below = cumulative
    count = h["count"]
    return {"batches": int(count), "mean": round(h["sum"] / count, 2) if count else None, "sizes": per_bucket}


def batch_stats(text: str, queue: str) -> dict[str, Any]:
    """Batches formed on `queue` from /metrics text: count, mean size, and how many batches fell
    into each size bucket (le)."""
    return _batches(histogram(text, "vlrt_batch_size", "queue", queue))


def diff_batches(before: str, after: str, queue: str) -> dict[str, Any]:
    """batch_stats of what happened between two /metrics readings."""
    return _batches(_minus(histogram(after, "vlrt_batch_size", "queue", queue),
                           histogram(before, "vlrt_batch_size", "queue", queue)))


def stage_means(before: str, after: str) -> dict[str, float]:
    """Mean ms per request of each stage (queue, decode, encode, search) between two /metrics
    readings (stages without requests in between left out)."""
    means = {}
    for stage in ("queue", "decode", "encode", "search"):
        h = _minus(histogram(after, "vlrt_stage_seconds", "stage", stage),
                   histogram(before, "vlrt_stage_seconds", "stage", stage))
        if h["count"] > 0:
            means[stage] = round(1000 * h["sum"] / h["count"], 2)
    return means
