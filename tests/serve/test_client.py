"""vlrt.Client against the real service (tests/serve/conftest.py): embeddings equal the local
Runtime's, search equals the local Index's, errors come back as ServiceError with the server's
status, kind and reason, and the API key is enforced. A stub server covers what the real one
cannot be made to say on demand (Retry-After, a body that is not JSON)."""
from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlrt
from vlrt.client import Client, ServiceError
from vlrt.errors import VlrtError


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served.url, api_key=served.api_key)


@pytest.fixture(scope="module")
def runtime(served):
    return vlrt.Runtime.load(served.bundle, backend="ort-cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_embed_text_equals_the_runtime(client, runtime, served):
    texts = served.captions[:3] + ["a gray background with nothing on it"]
    got = client.embed_text(texts)
    assert got.dtype == np.float32 and got.shape == (4, runtime.embed_dim)
    np.testing.assert_allclose(got, runtime.encode_text(texts), atol=1e-5)
    np.testing.assert_allclose(client.embed_text(texts[0]), got[:1], atol=1e-5)  # a str is one row


def test_embed_videos_equals_the_runtime(client, runtime, served):
    paths = served.clips[:3]
    want = runtime.encode_videos(paths)
    got = client.embed_videos([paths[0], Path(paths[1]), Path(paths[2]).read_bytes()], concurrency=3)
    assert got.dtype == np.float32 and got.shape == want.shape == (3, runtime.embed_dim)
    assert cosines(got, want).min() >= 0.9999
    assert client.embed_videos([]).shape == (0, 0)


def test_embed_image_equals_the_runtime(client, runtime, tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None], (1, 64, 3))).save(path)
    got = client.embed_image(path)
    assert got.shape == (runtime.embed_dim,)
    assert cosines(got, runtime.encode_videos([str(path)])[0]) >= 0.9999


def test_search_equals_the_index(client, served):
    hits = client.search(served.captions[0], k=5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    index = vlrt.Index.open(served.index)
    want = index.search(served.captions[0], k=5)
    assert [h["path"] for h in hits] == [p for p, _ in want]
    np.testing.assert_allclose(scores, [s for _, s in want], atol=1e-5)
    by_vector = client.search(vector=client.embed_text(served.captions[0])[0], k=5)
    assert [h["path"] for h in by_vector] == [h["path"] for h in hits]
    by_video = client.search(video=served.clips[4], k=2)  # uploaded: finds itself first
    assert by_video[0]["path"] == served.clips[4] and by_video[0]["score"] > 0.9999
    index.close()


def test_errors_carry_status_kind_and_reason(client, served):
    with pytest.raises(ServiceError, match=r"^POST /v1/search: HTTP 400 \(bad_request\): k must be between 1 and "
                                           r"1000, got 0$") as caught:
        client.search("a red square", k=0)
    assert (caught.value.status, caught.value.kind, caught.value.retry_after) == (400, "bad_request", None)
    assert isinstance(caught.value, VlrtError)
    with pytest.raises(ServiceError, match="HTTP 403 \\(read_only\\)") as caught:
        client.add_videos([Path(served.clips[0]).name])
    assert caught.value.status == 403
    with pytest.raises(VlrtError, match=r"exactly one of text, vector, video or image; got \['text', 'video'\]"):
        client.search("a red square", video=b"...")


def test_the_api_key_is_enforced(served, runtime):
    for key in (None, "not-the-key-at-all"):
        anonymous = Client(served.url, api_key=key)
        assert anonymous.health() is True and anonymous.ready()["state"] == "ready"  # open paths
        with pytest.raises(ServiceError, match="HTTP 401 \\(unauthorized\\): a valid API key is required") as caught:
            anonymous.embed_text("a red square")
        assert (caught.value.status, caught.value.kind) == (401, "unauthorized")
    assert Client(served.url, api_key=served.api_key).embed_text("a red square").shape == (1, runtime.embed_dim)


class Stub(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's (status, headers, body)."""
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")

    def do_GET(self) -> None:
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_retry_after_and_bodies_that_are_not_json(stub):
    client = Client(f"http://127.0.0.1:{stub.server_address[1]}")
    Stub.answer = (429, {"Retry-After": "2", "Content-Type": "application/json"},
                   b'{"error": "the text queue is full", "kind": "overloaded"}')
    with pytest.raises(ServiceError, match=r"^POST /v1/embed/text: HTTP 429 \(overloaded\): the text queue is full$") \
            as caught:
        client.embed_text("x")
    assert (caught.value.status, caught.value.kind, caught.value.retry_after) == (429, "overloaded", 2.0)
    Stub.answer = (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")
    with pytest.raises(ServiceError, match=r"^POST /v1/search: HTTP 502: <html>Bad Gateway</html>$") as caught:
        client.search("x")
    assert (caught.value.kind, caught.value.retry_after, caught.value.body) == (None, None, None)
    Stub.answer = (503, {}, b'{"state": "loading", "engine": null, "index": null}')
    assert client.ready() == {"state": "loading", "engine": None, "index": None}
    assert client.health() is False


def test_a_server_that_is_not_there():
    with socket.socket() as sock:  # bound, never listening: nothing answers on its port
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = Client(url, timeout=5)
        assert client.health() is False
        with pytest.raises(VlrtError, match=f"^{url}: cannot reach the service: "):
            client.embed_text("x")
    with pytest.raises(VlrtError, match="must start with http:// or https://"):
        Client("localhost:8080")
