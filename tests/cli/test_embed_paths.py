"""`vlrt embed` and `vlrt search` through the real entry point: every bad path named by its given
name with a reason while the good ones embed; changed files re-embedded, deleted ones dropped,
one error line per failing file; a moved bundle; an int8 index queried through the int8 text
graph; argument errors, empty queries, --json errors and engine lines; an impossible -o, a damaged
index.json and a second writer refused in one line."""
import ctypes
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from cli_support import vlrt
from video_assets import write_image, write_video

from vlrt import Runtime
from vlrt.runtime.index import Index

TEXT = "".join(f"line {i}: notes about the corpus, not a video at all\n" for i in range(200))



@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle


def _drop_read_override():
    """In the child, before exec: root loses the capabilities that let it read a mode-000 file."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unreadable_setup():
    """(preexec_fn, None) when a mode-000 file is unreadable to the child, else (None, why not)."""
    if os.geteuid() != 0:
        return None, None
    try:
        subprocess.run(["true"], preexec_fn=_drop_read_override, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"running as root without CAP_SETPCAP ({exc}): root reads mode-000 files"
    return _drop_read_override, None


def test_every_bad_path_is_reported_and_the_run_goes_on(bundle, tmp_path):
    os.makedirs(tmp_path / "videos" / "sub")
    write_video(tmp_path / "videos" / "v0.mp4", frames=24)
    write_video(tmp_path / "videos" / "sub" / "v1.mkv", frames=36)
    write_image(tmp_path / "videos" / "still.png")
    write_video(tmp_path / "named.mov", frames=12)
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.symlink("gone/real.mp4", tmp_path / "dangling.mp4")
    os.mkdir(tmp_path / "clip.mp4")
    os.mkdir(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text(TEXT)
    os.mkfifo(tmp_path / "pipe.mp4")
    bad = {"loop.mp4": "symbolic link loop", "dangling.mp4": "dangling symbolic link (to gone/real.mp4",
           "clip.mp4": "a directory, not a video file, and it holds no video or image files",
           "empty": "a folder that holds no video or image files",
           "notes.txt": "not a video or image: FFmpeg reads it as text (the tty demuxer, ansi codec)",
           "pipe.mp4": "not a regular file: a named pipe (FIFO)", "missing.mp4": "no such file"}
    preexec, why = unreadable_setup()
    if why is None:
        shutil.copyfile(tmp_path / "named.mov", tmp_path / "secret.mp4")
        os.chmod(tmp_path / "secret.mp4", 0)
        bad["secret.mp4"] = "permission denied: cannot read it"
    res = vlrt("embed", bundle, "videos", "named.mov", *bad, "-o", "idx", "--json", cwd=tmp_path, preexec_fn=preexec)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    failed = {f["path"]: f["error"] for f in out["failed"]}
    assert sorted(failed) == sorted(bad)
    for given, reason in bad.items():
        assert failed[given].startswith(f"{given}: {reason}"), failed[given]
    good = ["videos/still.png", "videos/sub/v1.mkv", "videos/v0.mp4", "named.mov"]
    assert (out["embedded"], out["total_in_index"]) == (4, 4)
    assert Index.open(tmp_path / "idx").paths == [str(tmp_path / g) for g in good]
    if why is not None:
        pytest.skip(f"all but the unreadable file checked; {why}")


def embed_json(bundle, *args, cwd):
    res = vlrt("embed", bundle, *args, "-o", "idx", "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def error_lines(root):
    return [json.loads(line) for line in (root / "idx" / "errors.jsonl").read_text().splitlines()]


def test_changed_and_deleted_files_and_errors_over_reruns(bundle, tmp_path):
    for name, frames in (("a.mp4", 24), ("b.mp4", 36), ("c.mp4", 48)):
        write_video(tmp_path / name, frames=frames)
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 20)
    files = ["a.mp4", "b.mp4", "c.mp4", "bad.mp4"]
    first = embed_json(bundle, *files, cwd=tmp_path)
    assert (first["embedded"], len(first["failed"]), first["total_in_index"]) == (3, 1, 3)
    old_a = Index.open(tmp_path / "idx").embeddings[0].copy()
    write_video(tmp_path / "a.mp4", frames=60, width=128, height=128)  # replaced at the same path
    st = os.stat(tmp_path / "a.mp4")
    os.utime(tmp_path / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    os.remove(tmp_path / "c.mp4")
    second = embed_json(bundle, *files[:2], "bad.mp4", cwd=tmp_path)
    assert {k: second[k] for k in ("embedded", "replaced", "already_indexed", "dropped", "total_in_index")} == \
        {"embedded": 1, "replaced": 1, "already_indexed": 1, "dropped": 1, "total_in_index": 2}
    index = Index.open(tmp_path / "idx")
    assert index.paths == [str(tmp_path / "b.mp4"), str(tmp_path / "a.mp4")]
    new_a = Runtime.load(bundle).encode_videos([str(tmp_path / "a.mp4")])[0]
    assert np.abs(index.embeddings[1] - new_a).max() < 1e-5 and np.abs(old_a - new_a).max() > 1e-3
    assert index.rows[1]["file_size"] == os.path.getsize(tmp_path / "a.mp4") and index.rows[1]["width"] == 128
    assert [(e["path"], e["given"]) for e in error_lines(tmp_path)] == [(str(tmp_path / "bad.mp4"), "bad.mp4")]
    hits = json.loads(vlrt("search", "idx", "a square", "--json", cwd=tmp_path).stdout)["results"]
    assert sorted(h["path"] for h in hits) == sorted(index.paths)  # the deleted file is not found
    write_video(tmp_path / "bad.mp4", frames=12)  # fixed: embedded, and its error line goes
    third = embed_json(bundle, "bad.mp4", cwd=tmp_path)
    assert (third["embedded"], third["failed"], error_lines(tmp_path)) == (1, [], [])
    os.remove(tmp_path / "b.mp4")
    res = vlrt("embed", bundle, "-o", "idx", "--prune", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "idx: dropped 1 deleted files; 2 in the index\n", res.stderr
    assert Index.open(tmp_path / "idx").paths == [str(tmp_path / "a.mp4"), str(tmp_path / "bad.mp4")]
    assert len(list((tmp_path / "idx" / "shards").glob("*.jsonl"))) == 1  # compacted
    res = vlrt("embed", bundle, "a.mp4", "-o", "idx", "--prune", cwd=tmp_path)
    assert res.returncode == 1 and "--prune embeds nothing, so it takes no paths" in res.stderr


def test_moved_bundle(bundle, tmp_path):
    shutil.copytree(bundle, tmp_path / "a" / "b")
    write_video(tmp_path / "v.mp4", frames=24)
    assert vlrt("embed", tmp_path / "a" / "b", tmp_path / "v.mp4", "-o", tmp_path / "a" / "idx").returncode == 0
    shutil.move(tmp_path / "a", tmp_path / "z")  # bundle and index together
    res = vlrt("search", tmp_path / "z" / "idx", "a square", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["results"][0]["path"] == str(tmp_path / "v.mp4")
    shutil.move(tmp_path / "z" / "b", tmp_path / "elsewhere")
    res = vlrt("search", tmp_path / "z" / "idx", "a square", "--json")
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
    message = json.loads(res.stdout)["error"]
    assert message in res.stderr and "the bundle this index was embedded with is missing" in message
    assert f"{tmp_path / 'z' / 'b'} (no such directory)" in message and "--bundle DIR" in message
    res = vlrt("search", tmp_path / "z" / "idx", "a square", "--bundle", tmp_path / "elsewhere", "--json")
    assert res.returncode == 0 and len(json.loads(res.stdout)["results"]) == 1


def test_int8_index_is_queried_through_the_int8_text_graph(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    built = vlrt("build", copy, "--backend", "ort-cpu", "--precision", "int8", "--int8-mode", "dynamic", "--json")
    assert built.returncode == 0, built.stderr
    key = json.loads(built.stdout)["key"]
    write_video(tmp_path / "v.mp4", frames=24)
    out = json.loads(vlrt("embed", copy, tmp_path / "v.mp4", "-o", tmp_path / "idx", "--backend", "ort-cpu",
                          "--precision", "int8", "--json").stdout)
    assert (out["engine"]["engine"], out["engine"]["precision"], out["engine"]["backend"]) == (key, "int8", "ort-cpu")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert (meta["engine"]["engine"], meta["engine"]["backend"], meta["engine"]["precision"]) == (key, "ort-cpu", "int8")
    res = vlrt("search", tmp_path / "idx", "a red square", "--json")
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert (found["engine"]["engine"], found["engine"]["precision"]) == (key, "int8")
    video = Index.open(tmp_path / "idx").embeddings[0]
    int8 = Runtime.load(copy, backend="ort-cpu", engine=key).encode_text(["a red square"])[0] @ video
    fp32 = Runtime.load(copy, backend="ort-cpu").encode_text(["a red square"])[0] @ video
    score = found["results"][0]["score"]
    assert abs(score - int8) < 1e-5 and abs(score - fp32) > 1e-4
    text = vlrt("search", tmp_path / "idx", "a red square", "--backend", "ort-cpu").stdout.splitlines()
    assert text[0].startswith(f"query encoded with engine {key} (ort-cpu, int8")  # the engine's own backend: kept
    res = vlrt("search", tmp_path / "idx", "a red square", "--precision", "fp32", "--json")
    assert abs(json.loads(res.stdout)["results"][0]["score"] - fp32) < 1e-5
    assert f"the videos were embedded with {key}; the query is encoded with the fp32 graphs" in res.stderr


def one_error_line(res):
    assert res.returncode == 1 and "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr
    return res.stderr.strip()


def test_an_output_that_cannot_be_an_index_is_one_error_line(bundle, tmp_path):
    write_video(tmp_path / "v.mp4", frames=12)
    (tmp_path / "file").write_text("x")
    res = vlrt("embed", bundle, "v.mp4", "-o", "file/idx", cwd=tmp_path)
    assert one_error_line(res) == "vlrt: error: file/idx: cannot make the index directory: not a directory"
    res = vlrt("embed", bundle, "v.mp4", "-o", "file", cwd=tmp_path)
    assert one_error_line(res).startswith("vlrt: error: file: not a directory, so it cannot hold an index")
    res = vlrt("embed", bundle, "v.mp4", "-o", "/proc/x", cwd=tmp_path)
    assert one_error_line(res).startswith("vlrt: error: /proc/x: cannot make the index directory: ")
    assert vlrt("embed", bundle, "v.mp4", "-o", "idx", cwd=tmp_path).returncode == 0
    (tmp_path / "idx" / "index.json").write_text('{"version": 2, "embed_dim": ')  # cut short
    for args in (("embed", bundle, "v.mp4", "-o", "idx"), ("search", "idx", "a square")):
        assert one_error_line(vlrt(*args, cwd=tmp_path)).startswith(
            "vlrt: error: idx/index.json: cannot read this index's record: not valid JSON (")


def test_a_second_writer_is_refused(bundle, tmp_path):
    write_video(tmp_path / "v.mp4", frames=12)
    assert vlrt("embed", bundle, "v.mp4", "-o", "idx", cwd=tmp_path).returncode == 0
    held = Index.open(tmp_path / "idx")
    held.compact()  # holds the write lock from here until closed
    want = f"vlrt: error: idx is being written by another process (pid {os.getpid()})"
    assert one_error_line(vlrt("embed", bundle, "v.mp4", "-o", "idx", cwd=tmp_path)) == want
    assert one_error_line(vlrt("embed", bundle, "-o", "idx", "--prune", cwd=tmp_path)) == want
    res = vlrt("search", "idx", "a square", "--json", cwd=tmp_path)  # readers take no lock
    assert res.returncode == 0 and len(json.loads(res.stdout)["results"]) == 1
    held.close()
    assert vlrt("embed", bundle, "-o", "idx", "--prune", cwd=tmp_path).returncode == 0
