"""expand_paths: every argument is accounted for, by the name it was given; nothing is fatal."""
import os

import pytest

from vlrt.constants import MEDIA_SUFFIXES
from vlrt.runtime.paths import VIDEO_SUFFIXES, expand_paths


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A working directory of good files and every kind of bad path, named relatively."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("videos")
    for name in ("videos/a.mp4", "videos/b.MKV", "videos/notes.txt", "clip.mov"):
        with open(name, "wb") as fh:
            fh.write(b"x" * 10)
    os.mkdir("videos/sub")
    with open("videos/sub/c.png", "wb") as fh:
        fh.write(b"y")
    os.mkdir("videos/nested.mp4")  # a folder named like a video, holding one
    with open("videos/nested.mp4/d.webm", "wb") as fh:
        fh.write(b"z")
    os.mkdir("videos/hollow.mp4")  # named like a video, holding none
    os.symlink("loop.mp4", "loop.mp4")
    os.symlink("gone/real.mp4", "dangling.mp4")
    os.symlink("..", "videos/up.mp4")  # a symlinked folder named like a video: not followed
    os.mkdir("empty")
    os.mkfifo("pipe.mp4")
    os.symlink("clip.mov", "alias.mov")  # the same file twice: embedded once, by its first name
    return tmp_path


def test_every_bad_path_is_named_with_its_reason(tree):
    out = expand_paths(["videos", "clip.mov", "alias.mov", "loop.mp4", "dangling.mp4", "empty", "pipe.mp4",
                        "missing.mp4", "nothing*.mp4", "@nolist.txt"])
    good = ["videos/a.mp4", "videos/b.MKV", "videos/nested.mp4/d.webm", "videos/sub/c.png", "clip.mov"]
    assert [s.given for s in out.sources] == good  # in name order, folders walked where they sort
    assert [s.path for s in out.sources] == [str(tree / g) for g in good]
    assert [s.size for s in out.sources] == [10, 10, 1, 1, 10]
    reasons = {r.given: r.reason for r in out.rejected}
    want = {"videos/hollow.mp4": "a directory, not a video file, and it holds no video or image files",
            "videos/up.mp4": "a symbolic link to a directory, not a video file (not followed)",
            "loop.mp4": "symbolic link loop",
            "dangling.mp4": "dangling symbolic link (to gone/real.mp4, which does not exist)",
            "empty": "a folder that holds no video or image files",
            "pipe.mp4": "not a regular file: a named pipe (FIFO)",
            "missing.mp4": "no such file",
            "nothing*.mp4": "no file matches this pattern",
            "@nolist.txt": "cannot read this list of paths: No such file or directory"}
    assert sorted(reasons) == sorted(want)
    for given, reason in want.items():
        assert reasons[given].startswith(f"{given}: {reason}"), reasons[given]


def test_lists_and_globs(tree):
    with open("list.txt", "w") as fh:
        fh.write("# a comment\nclip.mov\n\n  videos/a.mp4  \nmissing.mp4\n")
    open("empty_list.txt", "w").close()
    out = expand_paths(["@list.txt", "videos/?.mp4", "@empty_list.txt"])
    assert [s.given for s in out.sources] == ["clip.mov", "videos/a.mp4"]  # the glob's a.mp4 is a repeat
    assert [r.reason for r in out.rejected] == ["missing.mp4: no such file",
                                                "@empty_list.txt: this list of paths holds none"]


def test_unreadable_file(tree):
    with open("secret.mp4", "wb") as fh:
        fh.write(b"x")
    os.chmod("secret.mp4", 0)
    if os.access("secret.mp4", os.R_OK) and os.geteuid() == 0:
        pytest.skip("running as root, which reads mode-000 files; tests/cli/test_embed_paths.py drops the "
                    "capability and checks this through `vlrt embed`")
    assert [r.reason for r in expand_paths(["secret.mp4"]).rejected] == [
        "secret.mp4: permission denied: cannot read it"]


def test_one_list_of_suffixes():
    assert {".mp4", ".mkv", ".webm", ".mov"} <= VIDEO_SUFFIXES and ".png" not in VIDEO_SUFFIXES
    assert MEDIA_SUFFIXES == VIDEO_SUFFIXES | {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
