"""The embedded models, each shipped in two forms, and the figures recorded when they were shipped.

    default_model.pt.gz       the default model's trained checkpoint (vlrt checkpoint format), for
                              `vlrt export` and `vlrt demo --from-checkpoint` (needs torch)
    default_model.pt.json     how it was trained (command, settings, minutes, CPU)
    default_bundle.tar.gz     the same model exported by `vlrt export` (ONNX graphs + manifest):
                              what `vlrt demo` runs, with no torch
    default_bundle.sha256     the archive's sha256, checked before it is unpacked
    xclip_model.pt.gz, xclip_model.pt.json, xclip_bundle.tar.gz, xclip_bundle.sha256
                              the same for its multi-grained sibling (X-CLIP's scorer;
                              `vlrt demo --model xclip`)
    demo_figures.json         the demo's fp32 figures per gallery size, recorded at shipping time
                              (the sibling's under "xclip")
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError

CHECKPOINT = "default_model.pt.gz"
BUNDLE_ARCHIVE = "default_bundle.tar.gz"
BUNDLE_SHA256 = "default_bundle.sha256"
RECORDED = "demo_figures.json"
MODELS = ("default", "xclip")  # the embedded models: "<name>_model.pt.gz", "<name>_bundle.tar.gz"


def _asset(name: str) -> Path:
    path = Path(str(resources.files("vlrt.assets").joinpath(name)))
    if not path.is_file():
        raise VlrtError(f"the embedded model's {name} is missing from this installation ({path}); reinstall vlrt")
    return path


def _model(name: str) -> str:
    if name not in MODELS:
        raise VlrtError(f"unknown embedded model {name!r}; there are {', '.join(MODELS)}")
    return name


def default_checkpoint(model: str = "default") -> Path:
    """The shipped checkpoint of an embedded model ("default", or "xclip": its multi-grained sibling)."""
    return _asset(CHECKPOINT if _model(model) == "default" else f"{model}_model.pt.gz")


def recorded_figures(videos: int, model: str = "default") -> dict[str, float] | None:
    """The fp32 figures recorded for a gallery of this many clips (None: none recorded)."""
    data = json.loads(_asset(RECORDED).read_text())
    return (data if _model(model) == "default" else data.get(model, {})).get(str(videos))


def bundle_archive(model: str = "default") -> Path:
    return _asset(BUNDLE_ARCHIVE if _model(model) == "default" else f"{model}_bundle.tar.gz")


def sha256_name(archive: Path) -> str:
    """The file beside an archive holding its sha256: X_bundle.tar.gz -> X_bundle.sha256."""
    return archive.name.removesuffix(".tar.gz") + ".sha256"


def unpack_default_bundle(dest: Path, model: str = "default") -> Path:
    """Unpack an embedded model's shipped bundle into `dest` (replaced if it holds an older copy)
    and return it. The archive's sha256 is checked first, and Bundle.open checks every file's after."""
    from vlrt.runtime.bundle import Bundle

    archive = bundle_archive(model)
    want = _asset(sha256_name(archive)).read_text().split()[0]
    got = hashlib.sha256(archive.read_bytes()).hexdigest()
    if got != want:
        raise VlrtError(f"{archive}: sha256 {got[:16]}... is not the recorded {want[:16]}...; the installation "
                        "is damaged, reinstall vlrt")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        bad = [m.name for m in members if not m.isfile() or "/" in m.name or m.name.startswith(".")]
        if bad:
            raise VlrtError(f"{archive}: unexpected entries {bad}; reinstall vlrt")
        for member in members:
            (dest / member.name).write_bytes(tar.extractfile(member).read())
    Bundle.open(dest)  # hash-checks every file against the manifest
    return dest


def write_bundle_archive(bundle: Path, archive: Path) -> dict[str, Any]:
    """Pack an exported bundle's files (not its engines) as the shipped archive, and its sha256
    beside it. Used when the embedded model is re-exported (`python -m vlrt.models.ship`)."""
    from vlrt.runtime.bundle import MANIFEST, Bundle

    manifest = Bundle.open(bundle).manifest
    names = sorted([e["name"] for e in manifest["files"]] + [MANIFEST])
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for name in names:
            info = tar.gettarinfo(str(bundle / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # reproducible archive
            with open(bundle / name, "rb") as fh:
                tar.addfile(info, fh)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_name(sha256_name(archive)).write_text(f"{digest}  {archive.name}\n")
    return {"files": names, "bytes": archive.stat().st_size, "sha256": digest}
