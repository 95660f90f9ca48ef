"""Reading a bundle: the manifest `vlrt.json` and the files it lists, hash-checked.

Everything inference needs is in the manifest; nothing is guessed at load time. A file whose
sha256 differs from the manifest's is refused.

Built engines (`vlrt build`) live inside the bundle, one directory per build under
`engines/<key>/` with their own `engine.json`. An engine is used only by the backend, precision,
bundle manifest, onnxruntime version and machine it was built for; a TensorRT engine also only
by the TensorRT version and GPU (name, compute capability) it was built with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError

MANIFEST = "vlrt.json"
BUNDLE_VERSION = 1
ENGINES = "engines"
ENGINE_MANIFEST = "engine.json"
ENGINE_VERSION = 1
# The fields of engine.json an engine is built from; its key is their hash.
ENGINE_KEY_FIELDS = ("backend", "precision", "options", "source", "versions", "machine")
# CPU features that change which int8/bf16 kernels run (and so whether an engine is still right).
ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> "Bundle":
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise VlrtError(f"{root}: not a vlrt bundle (no {MANIFEST}); make one with `vlrt export`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise VlrtError(f"{manifest_path}: unreadable manifest: {exc}") from None
        version = manifest.get("bundle_version")
        if version != BUNDLE_VERSION:
            raise VlrtError(f"{root}: bundle version {version!r}, this vlrt reads version {BUNDLE_VERSION}")
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        for entry in self.manifest["files"]:
            path = self.root / entry["name"]
            if not path.is_file():
                raise VlrtError(f"{self.root}: file {entry['name']} listed in {MANIFEST} is missing")
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise VlrtError(f"{path}: sha256 {actual[:16]}... does not match the manifest's "
                                f"{entry['sha256'][:16]}...; the bundle was modified or corrupted, export it again")

    def path(self, name: str) -> Path:
        return self.root / name

    def graph_path(self, graph: str) -> Path:
        try:
            return self.root / self.manifest["graphs"][graph]["file"]
        except KeyError:
            raise VlrtError(f"{self.root}: the bundle has no {graph!r} graph") from None

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["model"]["embed_dim"])

    @property
    def max_frames(self) -> int:
        return int(self.manifest["max_frames"])

    @property
    def max_words(self) -> int:
        return int(self.manifest["max_words"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["preprocessing"]["size"])

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.root / MANIFEST)

    def engine(self, *, backend: str, precision: str | None = None, key: str | None = None,
               token_merge: int = 0) -> "Engine":
        """The newest engine built for this bundle, backend, precision (None: any), token merging
        (0: none; merging is lossy, so only an explicit request gets it), onnxruntime and machine;
        with `key`, that engine, if it fits."""
        import onnxruntime

        target = {"backend": backend, "precision": precision, "source_manifest_sha256": self.manifest_sha256,
                  "onnxruntime": onnxruntime.__version__, "tensorrt": engine_tensorrt_version(backend),
                  "machine": engine_machine(backend), "token_merge": token_merge}
        found = [e for e in _engines(self.root) if key in (None, e.key)]
        # an explicit key may name a token-merged engine; without one, token merging must be asked for
        want = lambda e: {**target, "precision": precision or e.manifest.get("precision"),  # noqa: E731
                          "token_merge": token_merge_of(e.manifest) if key else token_merge}
        matching = [e for e in found if e.target() == want(e)]
        if key is not None and found and not matching:
            differ = [k for k, v in found[0].target().items() if v != want(found[0])[k]]
            raise VlrtError(f"{self.root}: engine {key} ({found[0].manifest.get('backend')}, "
                            f"{found[0].manifest.get('precision')}) does not fit here (different {', '.join(differ)})")
        if not matching:
            default = "fp16" if backend == "tensorrt" else "int8"
            raise VlrtError(_no_engine_message(self.root, backend, precision or default, key, stale=len(found),
                                               token_merge=token_merge))
        engine = max(matching, key=lambda e: e.manifest.get("created", ""))
        engine.verify()
        return engine


@dataclasses.dataclass(frozen=True)
class Engine:
    """One built engine: `engines/<key>/engine.json` and the graphs it lists."""

    root: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.root.name

    def target(self) -> dict[str, Any]:
        m = self.manifest
        return {"backend": m.get("backend"), "precision": m.get("precision"),
                "source_manifest_sha256": m.get("source", {}).get("manifest_sha256"),
                "onnxruntime": m.get("versions", {}).get("onnxruntime"),
                "tensorrt": m.get("versions", {}).get("tensorrt"), "machine": m.get("machine"),
                "token_merge": token_merge_of(m)}

    def graph_path(self, graph: str) -> Path:
        try:
            return self.root / self.manifest["graphs"][graph]["file"]
        except KeyError:
            raise VlrtError(f"{self.root}: the engine has no {graph!r} graph") from None

    def verify(self) -> None:
        if engine_key(self.manifest) != self.key:
            raise VlrtError(f"{self.root / ENGINE_MANIFEST}: its recorded build inputs do not hash to its key "
                            f"{self.key}; the engine was modified, rebuild it with `vlrt build ... --force`")
        # A TensorRT graph entry is its plan, and lists the ONNX graph it was built from under "onnx".
        files = [e for g in self.manifest["graphs"].values() for e in (g, g.get("onnx")) if e]
        for entry in files:
            path = self.root / entry["file"]
            actual = sha256_file(path) if path.is_file() else "missing"
            if actual != entry["sha256"]:
                raise VlrtError(f"{path}: sha256 {actual[:16]}... does not match engine.json's {entry['sha256'][:16]}...; "
                                f"the engine was modified or corrupted, rebuild it with `vlrt build ... --force`")


def token_merge_of(manifest: dict[str, Any]) -> int:
    """Tokens merged per vision block by an engine (0: none)."""
    passes = manifest.get("options", {}).get("graph_passes", {}).get("video", [])
    return next((p["token_merge"] for p in passes if p.get("name") == "token-merge"), 0)


def engine_key(manifest: dict[str, Any]) -> str:
    """A short hash of everything an engine is built from: settings, source, versions, machine."""
    inputs = {k: manifest.get(k) for k in ENGINE_KEY_FIELDS}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def machine_fingerprint() -> dict[str, Any]:
    """CPU model and the ISA flags that decide which kernels run (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == "model name":
                    model = value.strip()
                elif name.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def engine_machine(backend: str) -> dict[str, Any]:
    """The machine an engine for `backend` is keyed by: the CPU, and for TensorRT also the GPU."""
    machine = machine_fingerprint()
    if backend == "tensorrt":
        from vlrt.runtime.backends.trt import gpu_fingerprint

        machine = {**machine, "gpu": gpu_fingerprint()}
    return machine


def engine_tensorrt_version(backend: str) -> str | None:
    """The TensorRT version an engine for `backend` is keyed by (None: not a TensorRT engine)."""
    if backend != "tensorrt":
        return None
    from vlrt.runtime.backends.trt import tensorrt_version

    return tensorrt_version()


def _engines(root: Path) -> list[Engine]:
    out = []
    for path in sorted((root / ENGINES).glob(f"[!.]*/{ENGINE_MANIFEST}")):
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise VlrtError(f"{path}: unreadable engine manifest: {exc}") from None
        if manifest.get("engine_version") == ENGINE_VERSION:
            out.append(Engine(path.parent, manifest))
    return out


def _no_engine_message(root: Path, backend: str, precision: str, key: str | None, *, stale: int,
                       token_merge: int = 0) -> str:
    merge = f" --token-merge {token_merge}" if token_merge else ""
    what = f"engine {key}" if key else f"{precision} engine for {backend}" + (f" with{merge}" if merge else "")
    note = (f" ({stale} engine(s) under {ENGINES}/ were built for other settings, another bundle export, "
            "onnxruntime version or machine)") if stale else ""
    return (f"{root}: no {what} built on this machine{note}; build one with "
            f"`vlrt build {root} --backend {backend} --precision {precision}{merge}`")
