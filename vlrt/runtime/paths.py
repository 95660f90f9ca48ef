"""Which files an embedding run reads: arguments (files, folders, globs, @lists) -> the files to
embed, and every argument that names no embeddable file, with the reason, by the name it was given.

Nothing here opens a file with FFmpeg: named pipes, devices, sockets, unreadable files, symlink
loops and dangling links are refused from `os.stat` and one `open`, since FFmpeg would block on a
FIFO or report the link's target. Whether a regular file is a video is the decoder's call
(`vlrt.runtime.corpus`). Imports neither av nor torch.
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import os
import stat
from collections.abc import Iterable

from vlrt.constants import MEDIA_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["MEDIA_SUFFIXES", "VIDEO_SUFFIXES", "Expansion", "Rejected", "Source", "expand_paths"]

_SOME_SUFFIXES = ", ".join((".mp4", ".mkv", ".mov", ".webm", ".avi", ".jpg", ".png"))  # for messages
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclasses.dataclass(frozen=True)
class Source:
    """A regular, readable file to embed."""

    given: str  # as the user wrote it (a file found in a folder: that folder as given, joined)
    path: str  # absolute, symlinks resolved: the file's key in an index
    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An argument, or a file in a folder, that names nothing to embed."""

    given: str
    path: str  # absolute, symlinks not resolved (they may not resolve)
    reason: str  # the whole message, starting with `given: `


@dataclasses.dataclass
class Expansion:
    sources: list[Source] = dataclasses.field(default_factory=list)
    rejected: list[Rejected] = dataclasses.field(default_factory=list)


class _Refused(Exception):
    """A path that is not an embeddable file; the message is the reason."""


def _check(given: str) -> os.stat_result:
    """The stat of `given` when it is a directory or a regular file this process can read;
    otherwise _Refused(reason). Never follows a loop, never opens a FIFO."""
    try:
        st = os.stat(given)
    except FileNotFoundError:
        if os.path.islink(given):
            raise _Refused(f"dangling symbolic link (to {os.readlink(given)}, which does not exist)") from None
        raise _Refused("no such file") from None
    except OSError as exc:
        raise _Refused(_os_reason(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        return st
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    if kind or not stat.S_ISREG(st.st_mode):
        raise _Refused(f"not a regular file: {kind or 'an unknown kind of file'}")
    try:  # permission bits do not tell (ACLs, root, read-only mounts): try it
        os.close(os.open(given, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)))
    except OSError as exc:
        raise _Refused(_os_reason(exc)) from None
    return st


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: cannot read it"
    return exc.strerror or str(exc)


class _Collector:
    def __init__(self) -> None:
        self.out = Expansion()
        self.seen: set[str] = set()  # resolved paths of sources, rejected paths as given

    def reject(self, given: str, reason: str) -> None:
        path = os.path.abspath(given)
        if path not in self.seen:
            self.seen.add(path)
            self.out.rejected.append(Rejected(given, path, f"{given}: {reason}"))

    def add(self, given: str) -> None:
        try:
            st = _check(given)
        except _Refused as exc:
            self.reject(given, str(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(given)
            return
        path = os.path.realpath(given)
        if path not in self.seen:  # the same file under two names is embedded once, by the first
            self.seen.add(path)
            self.out.sources.append(Source(given, path, st.st_size, st.st_mtime_ns))

    def walk(self, folder: str) -> None:
        """Every file named like a video or image under `folder`, in name order; reported when
        there is none."""
        before = (len(self.out.sources), len(self.out.rejected))
        self._walk(folder)
        if (len(self.out.sources), len(self.out.rejected)) == before:
            what = ("a directory, not a video file, and it holds" if _is_media_name(folder.rstrip(os.sep))
                    else "a folder that holds")
            self.reject(folder, f"{what} no video or image files (by name: {_SOME_SUFFIXES}, ...)")

    def _walk(self, folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.reject(folder, f"cannot list this folder: {_os_reason(exc)}")
            return
        for entry in entries:
            path = os.path.join(folder, entry.name)
            media = _is_media_name(entry.name)
            if entry.is_dir(follow_symlinks=False):
                # a folder named like a video is walked on its own, to be reported if it holds nothing
                self.walk(path) if media else self._walk(path)
            elif media and entry.is_symlink() and _is_dir(entry):
                # never followed: a link to a parent folder would never end
                self.reject(path, "a symbolic link to a directory, not a video file (not followed)")
            elif media:
                self.add(path)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_media_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in MEDIA_SUFFIXES


def _items(spec: str, collector: _Collector) -> Iterable[str]:
    """The paths one argument names: itself, a glob's matches, or an @list's lines."""
    if spec.startswith("@") and not os.path.lexists(spec):
        try:
            with open(spec[1:], encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = _os_reason(exc) if isinstance(exc, OSError) else f"not a text file ({exc.reason})"
            collector.reject(spec, f"cannot read this list of paths: {reason}")
            return []
        items = [s for line in lines if (s := line.strip()) and not s.startswith("#")]
        if not items:
            collector.reject(spec, "this list of paths holds none")
        return items
    if any(ch in spec for ch in "*?[") and not os.path.lexists(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        if not matches:
            collector.reject(spec, "no file matches this pattern")
        return matches
    return [spec]


def expand_paths(specs: Iterable[str]) -> Expansion:
    """Files, folders (walked for MEDIA_SUFFIXES), globs and @lists -> the files to embed, each
    once, in a stable order, and every path that names nothing to embed, with the reason.

    A file named outright is taken whatever its suffix (the decoder decides); in a folder only
    names with a video or image suffix are. A path that exists literally is never read as a
    glob or an @list. No argument is fatal: each bad one is a `Rejected`.
    """
    collector = _Collector()
    for spec in specs:
        for given in _items(str(spec), collector):
            collector.add(given)
    return collector.out
