"""The service, in-process: the embedded model over an index of 8 of its synthetic test clips,
served by uvicorn on a free loopback port in a background thread, with an API key. Shared by
the page and client tests (one start per session: loading the engine is the slow part)."""
from __future__ import annotations

import dataclasses
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

API_KEY = "test-key-vlrt-0123"
CLIPS = 8


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    api_key: str
    bundle: Path
    index: Path
    clips: list[str]  # as the index records them: what /v1/poster and /v1/media serve
    captions: list[str]  # clips[i] shows captions[i]


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench.quality import write_gallery
    from vlrt.runtime.index import Index
    from vlrt.serve.app import create_app
    from vlrt.serve.config import ServeConfig

    root = tmp_path_factory.mktemp("served").resolve()
    bundle = unpack_default_bundle(root / "bundle")
    clips, scenes = write_gallery(root / "media", CLIPS)
    with Index.create(root / "index", bundle, backend="ort-cpu") as index:
        summary = index.add(clips)
        assert summary.embedded == CLIPS and not summary.failed, summary
    config = ServeConfig(index=str(root / "index"), media_root=str(root / "media"), api_key=API_KEY,
                         decode_workers=1, threads=1).checked()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts them
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="vlrt-serve", daemon=True)
    thread.start()
    try:
        _wait_ready(url, app.state.service, thread)
        yield Served(url, API_KEY, bundle, root / "index", clips, [s.caption for s in scenes])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait_ready(url: str, service, thread: threading.Thread, timeout: float = 180.0) -> None:
    """Until the service has loaded (its `settled` event); a load that failed, or a server thread
    that died, fails the session."""
    if not service.settled.wait(timeout):
        pytest.fail(f"the service was not ready within {timeout:g} s (state: {service.state})")
    if service.state != "ready":
        pytest.fail(f"the service did not load: {service.state}")
    if not thread.is_alive():
        pytest.fail("the server thread exited while starting (see the captured log)")
    with urllib.request.urlopen(f"{url}/readyz", timeout=60) as answer:  # queued until uvicorn accepts
        assert answer.status == 200
