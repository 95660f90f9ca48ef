"""`vlrt serve --ray` from the command line: its flags are checked before anything starts, and a
real run deploys a replica on its own local cluster, answers, logs each request, and stops on
SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from vlrt.cli.main import main


@pytest.mark.parametrize("argv, words", [
    (["--replicas", "2"], "add --ray"),
    (["--ray", "--min-replicas", "1"], "both --min-replicas and --max-replicas"),
    (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "min (3) <= max (2)"),
    (["--ray", "--replicas", "0"], "--replicas must be >= 1"),
    (["--ray", "--replicas", "2", "--writable"], "--writable needs one replica"),
])
def test_flags_are_checked_first(tmp_path, capsys, argv, words):
    pytest.importorskip("ray.serve")
    pytest.importorskip("fastapi")
    index = tmp_path / "index"
    index.mkdir()
    assert main(["serve", "--index", str(index), *argv]) == 1
    assert words in capsys.readouterr().err


def test_a_path_after_ray_is_not_an_address(tmp_path, capsys):
    pytest.importorskip("fastapi")
    assert main(["serve", "--ray", str(tmp_path)]) == 1
    assert "not a cluster address" in capsys.readouterr().err


def test_serve_ray_runs_answers_and_stops_on_sigterm(tmp_path):
    pytest.importorskip("ray.serve")
    pytest.importorskip("fastapi")
    from vlrt.assets import unpack_default_bundle

    bundle = unpack_default_bundle(tmp_path / "bundle")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "vlrt", "serve", str(bundle), "--ray", "--replicas", "1",
                                "--replica-cpus", "0.5", "--port", str(port), "--decode-workers", "1"],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            if "every replica ready" in line:
                ready.set()
        ready.set()  # the process ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(240) and process.poll() is None, "".join(lines[-30:])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embed/text", method="POST",
                                         data=json.dumps({"texts": ["a red circle"]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
        assert answer.status == 200 and body["dim"] == len(body["embeddings"][0]) > 0
        assert answer.headers["X-Vlrt-Replica"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0, "".join(lines[-30:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)
