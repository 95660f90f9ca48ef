"""`vlrt embed` and `vlrt search` through the real entry point: bad files skipped and reported
with their reasons, a killed run resumed with every video indexed exactly once."""
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from bad_corpus import write_corpus
from cli_support import vlrt
from video_assets import write_video

from vlrt import Runtime
from vlrt.runtime.index import Index


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle


def test_embed_skips_bad_files_and_search_finds_videos(bundle, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"v{i}.mp4", frames=24 + 24 * i)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (videos / "notes.txt").write_text("ignored: not a video suffix")
    res = vlrt("embed", bundle, videos, "-o", tmp_path / "idx", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["embedded"] == 3 and out["total_in_index"] == 3 and len(out["failed"]) == 1
    assert "broken.mp4" in out["failed"][0]["error"]
    index = Index.open(tmp_path / "idx")
    assert sorted(p.rsplit("/", 1)[1] for p in index.paths) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    res = vlrt("search", tmp_path / "idx", "a moving square", "-k", 2, "--json")
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)["results"]
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"] and hits[0]["path"] in index.paths
    again = json.loads(vlrt("embed", bundle, videos, "-o", tmp_path / "idx", "--json").stdout)
    assert (again["embedded"], again["already_indexed"], again["total_in_index"]) == (0, 3, 3)


def test_embed_reports_each_bad_file_with_its_reason(bundle, tmp_path):
    good, bad = write_corpus(tmp_path.resolve())  # `vlrt embed` reports resolved paths
    (tmp_path / "list.txt").write_text("".join(p + "\n" for p in [*bad, *good]))
    res = vlrt("embed", bundle, f"@{tmp_path / 'list.txt'}", "-o", tmp_path / "idx", "--json", "--batch-size", 2)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    failed = {f["path"]: f["error"] for f in out["failed"]}
    assert sorted(failed) == sorted(bad) and out["embedded"] == out["total_in_index"] == len(good)
    for path, reason in bad.items():
        assert failed[path].startswith(path + ": ") and reason in failed[path], failed[path]
    index = Index.open(tmp_path / "idx")
    assert sorted(index.paths) == sorted(good)
    rt = Runtime.load(bundle)
    alone = np.concatenate([rt.encode_videos([p]) for p in index.paths])  # (6, D)
    assert np.abs(index.embeddings - alone).max() < 1e-5


def test_all_files_failing_is_an_error(bundle, tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    res = vlrt("embed", bundle, tmp_path / "a.mp4", "-o", tmp_path / "idx")
    assert res.returncode == 1 and "every one of 1 files failed" in res.stderr


def test_resuming_with_other_options_is_refused(bundle, tmp_path):
    write_video(tmp_path / "a.mp4", width=64, height=48, frames=24, fps=12)
    assert vlrt("embed", bundle, tmp_path / "a.mp4", "-o", tmp_path / "idx").returncode == 0
    res = vlrt("embed", bundle, tmp_path / "a.mp4", "-o", tmp_path / "idx", "--skip-similar", "1")
    assert res.returncode == 1 and "resume with the same options" in res.stderr
    assert "skip_similar=None" in res.stderr and "skip_similar=1.0" in res.stderr


def test_killed_embed_resumes_without_loss_or_duplicates(bundle, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    # One 10 s 640x360 video copied 30 times: decoding dominates, so a run takes seconds.
    write_video(videos / "v00.mp4", width=640, height=360, frames=240, fps=24, gop=48)
    for i in range(1, 30):
        shutil.copyfile(videos / "v00.mp4", videos / f"v{i:02d}.mp4")
    args = [sys.executable, "-m", "vlrt", "embed", str(bundle), str(videos), "-o", str(tmp_path / "idx"),
            "--workers", "1", "--batch-size", "1", "--shard-size", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "idx" / "shards"
    for _ in range(1200):  # wait for three committed shards (or the process to end), 60 s at most
        if shards.is_dir() and len(list(shards.glob("*.jsonl"))) >= 3:
            break
        try:
            proc.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be interrupted"
    partial = len(Index.open(tmp_path / "idx"))
    assert 3 <= partial < 30
    res = subprocess.run(args + ["--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["already_indexed"] == partial and out["embedded"] == 30 - partial
    paths = Index.open(tmp_path / "idx").paths
    assert len(paths) == 30 and len(set(paths)) == 30
