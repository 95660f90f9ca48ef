"""A client that goes away: its request is cancelled (counted as client_gone), and the server
goes on serving."""
import json
import logging
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path


class Gone(logging.Handler):
    """Sees the server's request log: `event` is set by the line of a request whose client left."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if '"status": 499' in record.getMessage() and '"error": "client_gone"' in record.getMessage():
            self.event.set()


def metric(url: str, key: str, name: str) -> float:
    request = urllib.request.Request(f"{url}/metrics", headers={"X-API-Key": key})
    for line in urllib.request.urlopen(request, timeout=30).read().decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_disconnected_upload_is_cancelled(served):
    gone = 'vlrt_errors_total{kind="client_gone"}'
    before = metric(served.url, served.api_key, gone)
    log, seen = logging.getLogger("vlrt.serve"), Gone()
    level = log.level
    log.addHandler(seen)
    log.setLevel(logging.INFO)
    try:
        data = Path(served.clips[0]).read_bytes()
        host, port = urllib.parse.urlsplit(served.url).netloc.split(":")
        with socket.create_connection((host, int(port))) as sock:  # sends the upload, then leaves at once
            sock.sendall((f"POST /v1/embed/video?name=c.mp4 HTTP/1.1\r\nHost: {host}\r\n"
                          f"X-API-Key: {served.api_key}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
        assert seen.event.wait(30), "the server never noticed the client had gone"
    finally:
        log.removeHandler(seen)
        log.setLevel(level)
    assert metric(served.url, served.api_key, gone) == before + 1  # counted once the log line is out
    request = urllib.request.Request(f"{served.url}/v1/embed/text", data=json.dumps({"texts": ["a"]}).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": served.api_key})
    assert urllib.request.urlopen(request, timeout=30).status == 200
