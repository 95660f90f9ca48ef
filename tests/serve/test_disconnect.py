"""A client that goes away: its request is cancelled (counted as client_gone), and the server
goes on serving."""
import json
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path


def metric(url: str, key: str, name: str) -> float:
    request = urllib.request.Request(f"{url}/metrics", headers={"X-API-Key": key})
    for line in urllib.request.urlopen(request, timeout=30).read().decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_disconnected_upload_is_cancelled(served):
    gone = 'vlrt_errors_total{kind="client_gone"}'
    before = metric(served.url, served.api_key, gone)
    data = Path(served.clips[0]).read_bytes()
    host, port = urllib.parse.urlsplit(served.url).netloc.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /v1/embed/video?name=c.mp4 HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {served.api_key}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
        time.sleep(0.01)  # the upload is in; the client leaves before the answer
    deadline = time.monotonic() + 30
    while metric(served.url, served.api_key, gone) < before + 1:
        assert time.monotonic() < deadline, "the server never noticed the client had gone"
        time.sleep(0.05)
    request = urllib.request.Request(f"{served.url}/v1/embed/text", data=json.dumps({"texts": ["a"]}).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": served.api_key})
    assert urllib.request.urlopen(request, timeout=30).status == 200
