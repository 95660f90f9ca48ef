"""The corpus-embedding API: Index.create / Index.add / Index.open, a summary and progress events
instead of printing, text refused by codec, an opened index adding with its recorded options, one
writer at a time, runtimes by their arguments, and errors.jsonl for files that now fail."""
import json
import os

import numpy as np
import pytest
from video_assets import write_video

import vlrt
from vlrt.errors import VlrtError
from vlrt.runtime.video import probe


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle


def test_create_add_and_reopen(bundle, tmp_path, capsys):
    for i in range(3):
        write_video(tmp_path / f"v{i}.mp4", frames=12 * (i + 1))
    (tmp_path / "notes.txt").write_text("".join(f"line {i} of some notes\n" for i in range(200)))
    events = []
    index = vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu", mode="fast", keep_frames=True)
    summary = index.add([str(tmp_path / "v0.mp4"), str(tmp_path / "v1.mp4"), str(tmp_path / "notes.txt")],
                        batch_size=2, shard_size=1, progress=events.append)
    assert isinstance(summary, vlrt.EmbedSummary) and capsys.readouterr() == ("", "")  # the library prints nothing
    assert (summary.embedded, summary.already_indexed, summary.total_in_index) == (2, 0, 2)
    assert summary.failed == [{"path": str(tmp_path / "notes.txt"), "error": f"{tmp_path / 'notes.txt'}: not a video "
                               "or image: FFmpeg reads it as text (the tty demuxer, ansi codec)"}]
    assert summary.engine["engine"] is None and summary.engine["backend"] == "ort-cpu"
    assert events[0] == vlrt.EmbedEvent(total=3, embedded=0, failed=0)
    assert [(e.embedded, e.failed) for e in events[1:]] == [(1, 0), (2, 0), (2, 1)]
    assert len(index) == 2 and index.embeddings.shape == (2, 128)
    index.close()  # one writer at a time
    reopened = vlrt.Index.open(tmp_path / "idx")
    more = reopened.add([str(tmp_path)])  # the folder: v2 is new, v0 and v1 unchanged
    assert (more.embedded, more.already_indexed, more.total_in_index) == (1, 2, 3)
    want = vlrt.Runtime.load(bundle, backend="ort-cpu").encode_videos([str(tmp_path / "v2.mp4")], mode="fast")
    assert np.abs(reopened.embeddings[2] - want[0]).max() < 1e-5  # the recorded mode, fast
    assert (tmp_path / "idx" / "shards" / "000002.frames.npy").is_file()  # and per-frame embeddings kept
    assert reopened.search(want[0], k=1)[0][0] == str(tmp_path / "v2.mp4")


def test_other_options_on_an_existing_index_are_refused(bundle, tmp_path):
    vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu").close()
    with pytest.raises(VlrtError, match="resume with the same options"):
        vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu", mode="fast")
    with pytest.raises(VlrtError, match="keep_frames=False, mode=exact.* not .*keep_frames=True"):
        vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu", keep_frames=True)
    with vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu"):
        with pytest.raises(VlrtError, match="is being written by another Index or IndexWriter in this process"):
            vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu")


def test_runtime_refuses_other_arguments_once_loaded(bundle, tmp_path):
    index = vlrt.Index.create(tmp_path / "idx", bundle, backend="ort-cpu")
    default = index.runtime()
    assert index.runtime(backend="ort-cpu") is default and default.engine_info["engine"] is None
    with pytest.raises(VlrtError, match=r"already encodes queries with .*, not as asked \(backend=None, precision="
                                        r"None, engine=None, threads=1\); open the index again"):
        index.runtime(threads=1)
    index.close()
    reopened = vlrt.Index.open(tmp_path / "idx")
    one_thread = reopened.runtime(threads=1)
    assert reopened.runtime() is one_thread is reopened.runtime(threads=1)  # and `search` encodes with it
    with pytest.raises(VlrtError, match="already encodes queries"):
        reopened.runtime(engine="nope")


def test_a_file_that_now_fails_is_reported_while_its_old_row_stays(bundle, tmp_path):
    root = tmp_path.resolve()
    write_video(root / "a.mp4", frames=12)
    write_video(root / "b.mp4", frames=12)
    index = vlrt.Index.create(root / "idx", bundle, backend="ort-cpu")
    assert index.add([str(root / "a.mp4"), str(root / "b.mp4")]).embedded == 2
    os.rename(root / "a.mp4", root / "kept.mp4")
    os.mkfifo(root / "a.mp4")  # replaced by a pipe: refused, never opened
    summary = index.add([str(root / "a.mp4"), str(root / "b.mp4")])
    assert [f["error"] for f in summary.failed] == [f"{root / 'a.mp4'}: not a regular file: a named pipe (FIFO)"]
    errors = [json.loads(line) for line in (root / "idx" / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(root / "a.mp4")]
    assert index.paths == [str(root / "a.mp4"), str(root / "b.mp4")]  # its older embedding stays
    os.remove(root / "a.mp4")
    os.rename(root / "kept.mp4", root / "a.mp4")  # back as it was: unchanged, so not embedded again
    summary = index.add([str(root / "a.mp4")])
    assert (summary.embedded, summary.already_indexed, summary.failed) == (0, 1, [])
    assert (root / "idx" / "errors.jsonl").read_text() == ""


def test_text_is_refused_by_every_reader(bundle, tmp_path):
    """FFmpeg's tty demuxer would make a 4-frame "video" of a text file: probe refuses it, so
    Runtime.encode_videos does too, not only `vlrt embed`."""
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}: notes about the corpus\n" for i in range(200)))
    message = rf"^{notes}: not a video or image: FFmpeg reads it as text \(the tty demuxer, ansi codec\)"
    with pytest.raises(VlrtError, match=message):
        probe(notes)
    with pytest.raises(VlrtError, match=message):
        vlrt.Runtime.load(bundle).encode_videos([str(notes)])
