"""Writing a bundle or an engine directory atomically: everything goes to a temporary sibling
directory, which is renamed into place only when complete, so an interrupted export or build
leaves no half-written directory."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vlrt.errors import VlrtError
from vlrt.runtime.bundle import MANIFEST


@contextlib.contextmanager
def staging_dir(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temp dir beside `target`; on success it replaces `target`, on failure it is removed."""
    target = target.resolve()
    if target.exists() and not overwrite:
        raise VlrtError(f"{target}: already exists; pass --force to replace it")
    if target.exists() and not (target / MANIFEST).is_file():
        raise VlrtError(f"{target}: exists and is not a vlrt bundle; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
