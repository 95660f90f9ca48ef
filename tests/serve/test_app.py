"""The service in-process (Starlette's TestClient, the embedded model, a small index of synthetic
clips): answers equal the library's, paths stay under the media root, the API key is enforced,
bad requests get a 4xx with a reason, a writable index takes uploads and searches them at once."""
import asyncio
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vlrt.serve.app import create_app  # noqa: E402
from vlrt.serve.config import ServeConfig  # noqa: E402

CLIPS = 6
KEY = "test-key-123"


@pytest.fixture(scope="module")
def media_index(tmp_path_factory):
    """(bundle, index dir, clip paths): the embedded model and an index of 6 test clips."""
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench.quality import write_gallery
    from vlrt.runtime.index import Index

    root = tmp_path_factory.mktemp("serve")
    bundle = unpack_default_bundle(root / "bundle")
    paths, _ = write_gallery(root / "media" / "clips", CLIPS)
    with Index.create(root / "index", bundle) as index:
        index.add(paths)
    return bundle, root / "index", [Path(p) for p in paths]


@pytest.fixture(scope="module")
def runtime(media_index):
    from vlrt.runtime.runtime import Runtime

    return Runtime.load(media_index[0])


def loaded(app) -> None:
    """Until the app's engine (and index) have loaded: its `settled` event, then /readyz says ready."""
    service = app.state.service
    assert service.settled.wait(60) and service.state == "ready", service.state


def start(config: ServeConfig):
    app = create_app(config)
    client = TestClient(app)
    client.__enter__()
    loaded(app)
    assert client.get("/readyz").status_code == 200
    return client


@pytest.fixture(scope="module")
def client(media_index):
    bundle, index, clips = media_index
    c = start(ServeConfig.from_env({}, bundle=str(bundle), index=str(index), media_root=str(clips[0].parents[1]),
                                   max_upload_mb=1.0))
    yield c
    c.__exit__(None, None, None)


def upload(client, path: Path, endpoint="/v1/embed/video", **params):
    return client.post(endpoint, params={"name": path.name, **params}, content=path.read_bytes(),
                       headers={"Content-Type": "application/octet-stream"})


def test_health_ready_and_schema(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["state"] == "ready" and ready["index"] == CLIPS
    schema = client.get("/openapi.json").json()
    assert {"/v1/embed/text", "/v1/embed/video", "/v1/embed/image", "/v1/search", "/v1/index/videos"} <= set(schema["paths"])


def test_text_embeddings_equal_the_library(client, runtime):
    texts = ["a red circle moves left", "two blue squares on a white background"]
    got = client.post("/v1/embed/text", json={"texts": texts}).json()
    np.testing.assert_allclose(np.asarray(got["embeddings"], np.float32), runtime.encode_text(texts), atol=1e-5)
    assert got["dim"] == runtime.embed_dim


def test_video_upload_equals_the_library(client, runtime, media_index):
    clip = media_index[2][0]
    got = upload(client, clip)
    assert got.status_code == 200, got.text
    body = got.json()
    want = runtime.encode_videos([str(clip)])[0]
    assert float(np.dot(np.asarray(body["embedding"], np.float32), want)) > 0.9999
    assert body["frames"] == runtime.bundle.manifest["max_frames"] and body["media"]["codec"] == "h264"


def test_search_by_text_vector_upload_and_path_agree_with_the_index(client, media_index):
    from vlrt.runtime.index import Index

    bundle, index_dir, clips = media_index
    index = Index.open(index_dir)
    text = "a small red circle moves quickly to the left on a black background"
    want = index.search(text, k=3)
    got = client.post("/v1/search", json={"text": text, "k": 3}).json()
    assert [r["path"] for r in got["results"]] == [p for p, _ in want]
    np.testing.assert_allclose([r["score"] for r in got["results"]], [s for _, s in want], atol=1e-5)
    assert [r["rank"] for r in got["results"]] == [1, 2, 3]
    # a video's own embedding finds itself first: by vector, by upload and by path under the media root
    vector = index.embeddings[index.paths.index(str(clips[1].resolve()))]
    by_vector = client.post("/v1/search", json={"vector": vector.tolist(), "k": 1}).json()["results"]
    by_upload = upload(client, clips[1], "/v1/search", k=1).json()["results"]
    by_path = client.post("/v1/search", json={"path": f"clips/{clips[1].name}", "k": 1}).json()["results"]
    for hits in (by_vector, by_upload, by_path):
        assert hits[0]["path"] == str(clips[1].resolve()) and hits[0]["score"] > 0.999


def test_paths_stay_under_the_media_root(client, media_index, tmp_path):
    clips = media_index[2]
    outside = tmp_path / "secret.mp4"
    shutil.copy(clips[0], outside)
    link = clips[0].parent / "link-out.mp4"
    link.symlink_to(outside)
    try:
        for given in ("../index/index.json", "clips/../../secret.mp4", str(outside), "clips/link-out.mp4"):
            answer = client.post("/v1/embed/video", json={"path": given})
            assert answer.status_code == 403, (given, answer.text)
            assert answer.json()["kind"] == "path_outside"
        assert client.post("/v1/embed/video", json={"path": "clips/missing.mp4"}).status_code == 404
    finally:
        link.unlink()


def test_no_paths_without_a_media_root(media_index):
    bundle, index, clips = media_index
    app = create_app(ServeConfig.from_env({}, bundle=str(bundle)))
    with TestClient(app) as c:
        answer = c.post("/v1/embed/video", json={"path": clips[0].name})
        assert answer.status_code in (403, 503)  # refused whether loaded or not
        loaded(app)
        answer = c.post("/v1/embed/video", json={"path": clips[0].name})
        assert answer.status_code == 403 and answer.json()["kind"] == "paths_disabled"
        assert c.post("/v1/search", json={"text": "a red circle"}).json()["kind"] == "no_index"


def test_api_key_on_every_endpoint_but_health(media_index):
    bundle = media_index[0]
    c = start(ServeConfig.from_env({}, bundle=str(bundle), api_key=KEY))
    try:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code in (200, 404)  # the page asks for the key itself
        for method, url in (("POST", "/v1/embed/text"), ("GET", "/metrics"), ("POST", "/v1/search"),
                            ("GET", "/openapi.json")):
            answer = c.request(method, url, json={"texts": ["x"]})
            assert answer.status_code == 401, url
            assert c.request(method, url, json={"texts": ["x"]}, headers={"X-API-Key": "wrong-key-0"}).status_code == 401
        ok = c.post("/v1/embed/text", json={"texts": ["x"]}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert c.post("/v1/embed/text", json={"texts": ["x"]}, headers={"X-API-Key": KEY}).status_code == 200
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("make, status, kind", [
    (lambda p: b"", 400, "empty"),
    (lambda p: os.urandom(4096), 422, None),
    (lambda p: p.read_bytes()[: len(p.read_bytes()) // 3], 422, None),
    (lambda p: b"just some text\n" * 50, 422, None),
    (lambda p: b"\0" * (2**20 + 1), 413, "too_large"),
])
def test_bad_uploads_get_a_reason_and_the_server_keeps_serving(client, media_index, make, status, kind):
    clip = media_index[2][0]
    answer = client.post("/v1/embed/video", params={"name": "bad.mp4"}, content=make(clip))
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] and (kind is None or body["kind"] == kind)
    assert upload(client, clip).status_code == 200


@pytest.mark.parametrize("body, status", [
    ({"texts": []}, 400), ({"texts": [1, 2]}, 400), ({"texts": ["x"] * 300}, 413),
    ({"text": "x", "k": 0}, 400), ({"text": "x", "vector": [0.0]}, 400), ({"vector": [0.0, 1.0]}, 400),
    ({"text": "   "}, 400),
])
def test_bad_json_requests(client, body, status):
    url = "/v1/embed/text" if "texts" in body else "/v1/search"
    answer = client.post(url, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    assert client.post(url, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400


def test_metrics_count_requests_batches_and_stages(client):
    client.post("/v1/embed/text", json={"texts": ["a green triangle"]})
    text = client.get("/metrics").text
    assert 'vlrt_batch_size_count{queue="text"}' in text
    assert 'vlrt_requests_total{endpoint="/v1/embed/text",status="200"}' in text
    assert 'vlrt_stage_seconds_count{stage="encode"}' in text
    assert "vlrt_decode_worker_restarts" in text


def test_writable_index_takes_an_upload_and_searches_it_at_once(media_index, tmp_path, runtime):
    from vlrt.runtime.index import Index

    bundle, index_dir, clips = media_index
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    read_only = start(ServeConfig.from_env({}, bundle=str(bundle), index=str(index)))
    try:
        assert upload(read_only, clips[0], "/v1/index/videos").status_code == 403
    finally:
        read_only.__exit__(None, None, None)
    new = tmp_path / "new-clip.mp4"
    shutil.copy(clips[0], new)
    with new.open("r+b") as fh:  # another file: same pixels, one more byte at the end of the container
        fh.seek(0, 2)
        fh.write(b"\0")
    c = start(ServeConfig.from_env({}, bundle=str(bundle), index=str(index), writable=True))
    try:
        answer = upload(c, new, "/v1/index/videos")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["added"] == 1 and body["total"] == CLIPS + 1
        kept = Path(body["files"][0]["path"])
        assert kept.parent == (index / "uploads").resolve() and kept.suffix == ".mp4"
        vector = runtime.encode_videos([str(new)])[0]
        hits = c.post("/v1/search", json={"vector": vector.tolist(), "k": 2}).json()["results"]
        assert str(kept) in [h["path"] for h in hits]
        assert c.get("/v1/poster", params={"path": str(kept)}).content[:2] == b"\xff\xd8"
        assert c.get("/v1/media", params={"path": str(kept)}).content == new.read_bytes()
        assert c.get("/v1/media", params={"path": str(bundle / "vlrt.json")}).status_code == 404
    finally:
        c.__exit__(None, None, None)
    reopened = Index.open(index)  # the same shard format as `vlrt embed`: a later reader sees it
    assert len(reopened) == CLIPS + 1 and str(kept) in reopened.paths


def test_full_video_queue_answers_429_with_retry_after(media_index):
    bundle, _, clips = media_index
    app = create_app(ServeConfig.from_env({}, bundle=str(bundle), video_queue=1, video_batch=1,
                                          video_wait_ms=0, decode_workers=2))
    data = clips[0].read_bytes()

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
                await asyncio.to_thread(loaded, app)
                answers = await asyncio.gather(*(http.post("/v1/embed/video", params={"name": "c.mp4"}, content=data)
                                                 for _ in range(12)))
                after = await http.post("/v1/embed/video", params={"name": "c.mp4"}, content=data)
                return answers, after

    answers, after = asyncio.run(main())
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and json.loads(refused.text)["kind"] == "overloaded"
    assert after.status_code == 200


def test_a_request_over_the_timeout_answers_504_and_the_server_goes_on(media_index):
    bundle = media_index[0]
    # the text batch waits 200 ms for company: longer than the 50 ms a request may take
    c = start(ServeConfig.from_env({}, bundle=str(bundle), request_timeout_s=0.05, text_wait_ms=200))
    try:
        answer = c.post("/v1/embed/text", json={"texts": ["a red circle"]})
        assert answer.status_code == 504 and answer.json()["kind"] == "timeout"
        assert c.get("/healthz").status_code == 200
        assert 'vlrt_errors_total{kind="timeout"} 1.0' in c.get("/metrics").text
    finally:
        c.__exit__(None, None, None)


def test_hostile_uploads_cost_a_worker_at_most(media_index, tmp_path):
    """An audio-only file, an 8192x8192 frame in an .mpg (decoded by FFmpeg while it opens the
    file) and a 4096x4096 frame over a 64 MiB worker cap: each a 422 with its reason; the worker
    the cap stopped is replaced and the next upload is embedded."""
    from video_assets import write_audio_only, write_big_frame

    bundle, _, clips = media_index
    write_audio_only(tmp_path / "audio.m4a")
    cases = [(tmp_path / "audio.m4a", "undecodable", "no video stream"),
             (write_big_frame(tmp_path / "huge.mpg", 8192), "limit", "over the limit"),
             (write_big_frame(tmp_path / "big.mpg", 4096), "worker_died", "more memory than a decode worker may use")]
    c = start(ServeConfig.from_env({}, bundle=str(bundle), worker_memory_mb=64, max_width=4096, max_height=4096,
                                   decode_workers=1))
    try:
        for path, kind, words in cases:
            answer = upload(c, path)
            assert answer.status_code == 422 and answer.json()["kind"] == kind, answer.text
            assert words in answer.json()["error"] and "the upload" in answer.json()["error"]
            assert upload(c, clips[0]).status_code == 200
        assert "vlrt_decode_worker_restarts 1.0" in c.get("/metrics").text
    finally:
        c.__exit__(None, None, None)


def test_search_by_frames_needs_an_index_that_keeps_them(client):
    answer = client.post("/v1/search", json={"text": "a red circle", "frames": 2, "rerank": 10})
    assert answer.status_code == 400 and "--keep-frames" in answer.json()["error"]
    assert client.post("/v1/search", json={"text": "a red circle", "frames": 0}).status_code == 400


def test_search_by_frames_on_an_index_that_keeps_them(media_index, tmp_path):
    from vlrt.runtime.index import Index

    bundle, _, clips = media_index
    with Index.create(tmp_path / "idx", bundle, keep_frames=True) as index:
        index.add([str(c) for c in clips])
    text = "a small red circle moves quickly to the left on a black background"
    want = Index.open(tmp_path / "idx").search(text, k=3, frames=2, rerank=4)
    c = start(ServeConfig.from_env({}, bundle=str(bundle), index=str(tmp_path / "idx")))
    try:
        got = c.post("/v1/search", json={"text": text, "k": 3, "frames": 2, "rerank": 4}).json()
    finally:
        c.__exit__(None, None, None)
    assert [r["path"] for r in got["results"]] == [p for p, _ in want]
    np.testing.assert_allclose([r["score"] for r in got["results"]], [s for _, s in want], atol=1e-5)
    assert (got["frames"], got["rerank"]) == (2, 4)


def test_search_on_a_multi_grained_index_uses_the_scorer(media_index, tmp_path):
    """A DRL bundle's index: a text is scored by the model's scorer, as `Index.search` scores it."""
    from checkpoint_writers import TINY_C4C, write_drl

    from vlrt.export import export_checkpoint
    from vlrt.runtime.index import Index

    _, _, clips = media_index
    bundle = export_checkpoint(write_drl(tmp_path / "drl.bin", TINY_C4C, seed=3), tmp_path / "drl").bundle
    with Index.create(tmp_path / "idx", bundle) as index:
        index.add([str(c) for c in clips])
    want = Index.open(tmp_path / "idx").search("a red circle", k=4, rerank=5)
    c = start(ServeConfig.from_env({}, bundle=str(bundle), index=str(tmp_path / "idx")))
    try:
        got = c.post("/v1/search", json={"text": "a red circle", "k": 4, "rerank": 5}).json()
        exact = c.post("/v1/search", json={"text": "a red circle", "k": 4}).json()
    finally:
        c.__exit__(None, None, None)
    assert [r["path"] for r in got["results"]] == [p for p, _ in want]
    np.testing.assert_allclose([r["score"] for r in got["results"]], [s for _, s in want], atol=1e-5)
    assert len(exact["results"]) == 4 and got["rerank"] == 5
