"""`vlrt embed --ray`: the Ray Data pipeline writes the index `vlrt embed` writes, loses and
duplicates no row when an encoder actor is killed, resumes after its driver died, and runs from
the command line. One local Ray cluster (2 CPUs) serves the whole module."""
import json
import os
import signal
import threading

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from video_assets import write_video  # noqa: E402

from vlrt.cli.main import main  # noqa: E402
from vlrt.runtime.index import Index, scan  # noqa: E402
from vlrt.runtime.ray_embed import PARTS, embed_on_ray, read_part  # noqa: E402

VIDEOS = 24
QUERIES = ["a red square", "white and black stripes", "a moving pattern"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from vlrt.assets import unpack_default_bundle

    return unpack_default_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos").resolve()
    for i in range(VIDEOS):
        write_video(root / f"v{i:02d}.mp4", width=96 + 16 * (i % 4), height=64, frames=10 + i, start_pts=i, gop=6)
    (root / "broken.mp4").write_bytes(b"not a video" * 20)  # an error row, as vlrt embed records it
    return root


@pytest.fixture(scope="module")
def reference(bundle, corpus, tmp_path_factory):
    """The index `vlrt embed` (Index.add) makes of the corpus."""
    out = tmp_path_factory.mktemp("local") / "idx"
    with Index.create(out, bundle, backend="ort-cpu") as index:
        summary = index.add([str(corpus)], batch_size=4)
    assert summary.embedded == VIDEOS and len(summary.failed) == 1
    reference = Index.open(out)
    reference.failed = summary.failed
    return reference


def _by_path(index: Index) -> dict[str, tuple[np.ndarray, dict]]:
    return {row["path"]: (emb, row) for emb, row in zip(index.embeddings, index.rows)}


def _assert_same(index: Index, reference: Index) -> None:
    got, want = _by_path(index), _by_path(reference)
    assert sorted(got) == sorted(want) and len(index) == VIDEOS
    for path, (emb, row) in want.items():
        cos = float(np.dot(got[path][0], emb) / np.linalg.norm(got[path][0]) / np.linalg.norm(emb))
        assert cos >= 0.99999, (path, cos)
        assert got[path][1] == row  # the same row: size, mtime, frames, what the decoder saw
    assert _stored_rows(index.root) == VIDEOS  # no row written twice
    errors = {json.loads(line)["path"] for line in (index.root / "errors.jsonl").read_text().splitlines()}
    want_errors = {json.loads(line)["path"] for line in (reference.root / "errors.jsonl").read_text().splitlines()}
    assert errors == want_errors and len(errors) == 1


def _stored_rows(root) -> int:
    return scan(root).stored


def test_same_index_as_vlrt_embed(cluster, bundle, corpus, reference, tmp_path):
    events = []
    with Index.create(tmp_path / "idx", bundle, backend="ort-cpu") as index:
        summary = embed_on_ray(index, [str(corpus)], actors=1, batch_size=4, progress=events.append)
    assert (summary.embedded, len(summary.failed), summary.total_in_index) == (VIDEOS, 1, VIDEOS)
    assert summary.failed == reference.failed  # the same reason, by the name given
    assert (summary.encoded, summary.from_parts, summary.duplicates) == (VIDEOS + 1, 0, 0)
    assert events[0].total == VIDEOS + 1 and (events[-1].embedded, events[-1].failed) == (VIDEOS, 1)
    assert not list((tmp_path / "idx" / PARTS).glob("*.parquet"))  # merged, then removed
    index = Index.open(tmp_path / "idx")
    _assert_same(index, reference)
    for text in QUERIES:
        assert [p for p, _ in index.search(text, k=5)] == [p for p, _ in reference.search(text, k=5)]
    again = Index.create(tmp_path / "idx", bundle, backend="ort-cpu")
    rerun = embed_on_ray(again, [str(corpus)])  # nothing changed: only the broken file is tried again
    again.close()
    assert (rerun.embedded, rerun.already_indexed, rerun.encoded) == (0, VIDEOS, 1)


def _alive_encoder_pids() -> list[int]:
    from ray._private.state import actors

    return [a["Pid"] for a in actors().values() if "Encoder" in a["ActorClassName"] and a["State"] == "ALIVE"]


def test_a_killed_encoder_actor_loses_and_duplicates_nothing(cluster, bundle, corpus, reference, tmp_path):
    parts = tmp_path / "idx" / PARTS
    killed: list[int] = []
    stop = threading.Event()

    def kill_encoder_after_its_first_part() -> None:
        while not stop.is_set():
            if parts.is_dir() and any(name.endswith(".parquet") for name in os.listdir(parts)):
                pids = _alive_encoder_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)  # the actor's process dies mid-run; Ray restarts it
                    killed.append(pids[0])
                    return
            stop.wait(0.005)

    killer = threading.Thread(target=kill_encoder_after_its_first_part, daemon=True)
    killer.start()
    try:
        with Index.create(tmp_path / "idx", bundle, backend="ort-cpu") as index:
            summary = embed_on_ray(index, [str(corpus)], actors=1, batch_size=1)
    finally:
        stop.set()
        killer.join()
    assert killed, "no part appeared"
    by_process = summary.stages["encode_busy_s_by_process"]
    assert set(by_process) - {str(killed[0])}  # the restarted actor encoded the batches left (and any retried)
    assert (summary.embedded, summary.total_in_index, summary.duplicates) == (VIDEOS, VIDEOS, 0)
    _assert_same(Index.open(tmp_path / "idx"), reference)


class _DriverDied(Exception):
    pass


def test_a_rerun_after_the_driver_died_embeds_only_the_rest(cluster, bundle, corpus, reference, tmp_path):
    def die(part: str, rows: int) -> None:
        if _stored_rows(tmp_path / "idx"):  # after the first block that committed rows
            raise _DriverDied(part)

    index = Index.create(tmp_path / "idx", bundle, backend="ort-cpu")
    with pytest.raises(_DriverDied):
        embed_on_ray(index, [str(corpus)], batch_size=4, shard_size=1, on_block=die)
    index.close()
    committed = _stored_rows(tmp_path / "idx")
    assert 1 <= committed < VIDEOS
    in_index = set(scan(tmp_path / "idx").live)
    left = {row["path"] for part in (tmp_path / "idx" / PARTS).glob("*.parquet") for row in read_part(part)
            if not row["error"]} - in_index  # encoded before the driver died, not merged
    with Index.create(tmp_path / "idx", bundle, backend="ort-cpu") as index:
        summary = embed_on_ray(index, [str(corpus)], batch_size=4)
    assert summary.already_indexed == committed
    assert summary.from_parts == len(left)
    assert summary.encoded == VIDEOS + 1 - committed - len(left)  # the rest; the broken file is tried again
    assert summary.embedded == VIDEOS - committed and summary.duplicates == 0
    _assert_same(Index.open(tmp_path / "idx"), reference)


def test_cli_ray(cluster, bundle, corpus, reference, tmp_path, capsys):
    out = tmp_path / "idx"
    code = main(["embed", str(bundle), str(corpus), "-o", str(out), "--backend", "ort-cpu", "--ray",
                 "--ray-actors", "1", "--batch-size", "4", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0, printed
    assert (printed["embedded"], printed["total_in_index"], printed["actors"]) == (VIDEOS, VIDEOS, 1)
    assert printed["stages"]["encode_busy_s"] > 0
    _assert_same(Index.open(out), reference)
    assert main(["embed", str(bundle), str(corpus), "-o", str(out), "--ray", "--skip-similar", "1"]) == 1
    assert "--ray does not take --skip-similar" in capsys.readouterr().err
