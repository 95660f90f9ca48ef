"""Writing a bundle's manifest: the export's settings, the versions used, and every file's
sha256. The bundle directory itself is written atomically by vlrt.build.staging."""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

from vlrt.runtime.bundle import BUNDLE_VERSION, MANIFEST, sha256_file


def file_entries(root: Path) -> list[dict[str, Any]]:
    return [{"name": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST]


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from vlrt import __version__

    return {"vlrt": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "versions": versions(),
        "files": file_entries(root),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
