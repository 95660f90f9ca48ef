"""`vlrt serve --ray`: the service on Ray Serve, two autoscaled replicas on a local cluster
(2 CPUs), answers the service's API as `vlrt serve` does (same embeddings and search results as
the library), with the API key, and batches concurrent requests through `@serve.batch` on each
replica. One deployment serves the whole module (starting replicas is the slow part)."""
from __future__ import annotations

import concurrent.futures as cf
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'vlrt[ray]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from vlrt.runtime.index import Index  # noqa: E402
from vlrt.serve.config import ServeConfig  # noqa: E402
from vlrt.serve.ray_serve import Scaling, serve_on_ray  # noqa: E402

KEY = "ray-serve-key-0123"
CLIPS = 8
BURST = 16  # concurrent one-text requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench.quality import write_gallery

    root = tmp_path_factory.mktemp("ray-serve").resolve()
    bundle = unpack_default_bundle(root / "bundle")
    clips, scenes = write_gallery(root / "media", CLIPS)
    with Index.create(root / "index", bundle, backend="ort-cpu") as index:
        assert index.add(clips).embedded == CLIPS
    config = ServeConfig(index=str(root / "index"), media_root=str(root / "media"), api_key=KEY, port=_free_port(),
                         decode_workers=1, threads=1, text_batch=8, text_wait_ms=300).checked()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    stop, up, failed = threading.Event(), threading.Event(), []

    def run() -> None:
        try:
            # autoscaling between 2 and 2: Ray Serve takes vlrt's autoscaling settings, and the
            # replica count stays known (the command-line test deploys a fixed count)
            serve_on_ray(config, Scaling(min_replicas=2, max_replicas=2, target_ongoing=4, cpus=0.5), stop=stop,
                         ready=lambda url: up.set())
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            failed.append(exc)
            up.set()

    thread = threading.Thread(target=run, name="vlrt-ray-serve", daemon=True)
    thread.start()
    try:
        assert up.wait(300), "the Ray Serve deployment did not come up within 300 s"
        assert not failed, failed
        yield {"url": f"http://127.0.0.1:{config.port}", "index": root / "index", "clips": clips,
               "captions": [s.caption for s in scenes]}
    finally:
        stop.set()
        thread.join(timeout=120)
        ray.shutdown()


def _call(url: str, path: str, body: dict | bytes | None = None, key: str | None = KEY,
          content_type: str = "application/json") -> tuple[int, dict | str, dict[str, str]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", content_type)
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status, raw, headers = answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    text = raw.decode()
    return status, (json.loads(text) if headers.get("content-type", "").startswith("application/json") else text), headers


def test_ready_and_api_key(deployed):
    status, body, headers = _call(deployed["url"], "/readyz", key=None)
    assert status == 200 and body["state"] == "ready" and body["index"] == CLIPS
    assert headers.get("x-vlrt-replica")
    status, body, _ = _call(deployed["url"], "/v1/embed/text", {"texts": ["a red circle"]}, key=None)
    assert status == 401 and "API key" in body["error"]


def test_same_answers_as_the_library(deployed):
    index = Index.open(deployed["index"])
    captions = deployed["captions"][:3]
    status, body, _ = _call(deployed["url"], "/v1/embed/text", {"texts": captions})
    assert status == 200
    want = index.runtime().encode_text(captions)
    np.testing.assert_allclose(np.asarray(body["embeddings"], np.float32), want, atol=1e-5)
    for caption in captions:
        status, body, _ = _call(deployed["url"], "/v1/search", {"text": caption, "k": 5})
        assert status == 200
        got = [(hit["path"], hit["score"]) for hit in body["results"]]
        expected = index.search(caption, k=5)
        assert [p for p, _ in got] == [p for p, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)
    clip = deployed["clips"][0]
    status, body, _ = _call(deployed["url"], f"/v1/embed/video?name={Path(clip).name}", Path(clip).read_bytes(),
                            content_type="application/octet-stream")
    assert status == 200, body
    stored = index.embeddings[index.paths.index(clip)]
    assert float(np.dot(np.asarray(body["embedding"], np.float32), stored)) >= 0.99999


def _text_batches(url: str, replicas: set[str]) -> dict[str, tuple[float, float]]:
    """(batches, texts) of each replica's text queue, from /metrics, asked until every replica in
    `replicas` has answered (the proxy picks the replica)."""
    seen: dict[str, tuple[float, float]] = {}
    for _ in range(200):
        status, text, headers = _call(url, "/metrics")
        assert status == 200
        count = re.search(r'^vlrt_batch_size_count\{queue="text"\} (\S+)$', text, re.M)
        total = re.search(r'^vlrt_batch_size_sum\{queue="text"\} (\S+)$', text, re.M)
        seen[headers["x-vlrt-replica"]] = (float(count[1]) if count else 0.0, float(total[1]) if total else 0.0)
        if replicas <= seen.keys():
            return seen
    pytest.fail(f"/metrics answered only from {sorted(seen)}, not from every replica {sorted(replicas)}")


def test_two_replicas_batch_concurrent_requests(deployed):
    url = deployed["url"]
    with cf.ThreadPoolExecutor(BURST) as pool:
        warm = list(pool.map(lambda i: _call(url, "/v1/embed/text", {"texts": [f"warm {i}"]}), range(BURST)))
    replicas = {headers["x-vlrt-replica"] for _, _, headers in warm}
    assert len(replicas) == 2, f"requests reached {len(replicas)} replica(s) of 2"
    before = _text_batches(url, replicas)
    with cf.ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(lambda i: _call(url, "/v1/embed/text", {"texts": [f"a blue square {i}"]}),
                                range(BURST)))
    assert all(status == 200 for status, _, _ in answers)
    after = _text_batches(url, replicas)
    batches = sum(after[r][0] - before[r][0] for r in replicas)
    texts = sum(after[r][1] - before[r][1] for r in replicas)
    assert texts == BURST  # every text went through a replica's batching queue once
    assert batches < BURST, f"{BURST} concurrent requests ran as {batches:g} batches: nothing was batched"
