"""Reading a bundle: the manifest `vlrt.json` and the files it lists, hash-checked.

Everything inference needs is in the manifest; nothing is guessed at load time. A file whose
sha256 differs from the manifest's is refused.

Built engines (`vlrt build`) live inside the bundle, one directory per build under
`engines/<key>/` with their own `engine.json`. An engine is used only by the backend, precision,
bundle manifest, onnxruntime version and machine it was built for; a TensorRT engine also only
by the TensorRT version and GPU (name, compute capability) it was built with.
`engines/auto.json` records what `vlrt build --auto` measured and chose, per machine.
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
BUNDLE_VERSION = 1  # the schema's major version, also written as `bundle_version`
# major.minor: a minor version adds fields that older readers ignore; a major one changes meaning.
# 1.1 added per-graph `embedding` / `features` output names and the family's `embedding` kind.
SCHEMA_VERSION = "1.1"
# What 1.0 bundles (which did not name them) hold: the CLIP graphs' outputs.
SCHEMA_1_0_OUTPUTS = {"video": ("video_embeds", "frame_embeds"), "text": ("text_embeds", "token_embeds")}
ENGINES = "engines"
ENGINE_MANIFEST = "engine.json"
AUTO_FILE = "auto.json"  # under engines/: `vlrt build --auto`'s choice, one entry per machine
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
        _check_schema(root, manifest)
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

    def outputs(self, graph: str) -> tuple[str, str | None]:
        """The names of a graph's embedding output and its per-frame/per-token features output."""
        entry = self.manifest["graphs"].get(graph)
        if entry is None:
            raise VlrtError(f"{self.root}: the bundle has no {graph!r} graph")
        if "embedding" in entry:
            return entry["embedding"], entry.get("features")
        return SCHEMA_1_0_OUTPUTS[graph]

    def output_names(self, graph: str) -> tuple[str, ...]:
        """Every output of a graph, in the graph's order."""
        entry = self.manifest["graphs"].get(graph) or {}
        return tuple(entry.get("outputs") or (name for name in self.outputs(graph) if name))

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

    def auto_entries(self) -> list[dict[str, Any]]:
        """Every machine's entry in engines/auto.json (none when `vlrt build --auto` never ran)."""
        path = self.root / ENGINES / AUTO_FILE
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text())["entries"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise VlrtError(f"{path}: unreadable ({exc}); run `vlrt build {self.root} --auto` again") from None

    def auto_choice(self) -> dict[str, Any] | None:
        """This machine's `vlrt build --auto` choice for this manifest ({name, backend, precision,
        key}; key None: the bundle's own graphs), or None."""
        entries = self.auto_entries()
        if not entries:
            return None
        machine, sha = machine_fingerprint(), self.manifest_sha256
        entry = next((e for e in entries if e.get("machine") == machine
                      and e.get("source", {}).get("manifest_sha256") == sha), None)
        return entry["choice"] if entry else None

    def engine(self, *, backend: str, precision: str | None = None, key: str | None = None,
               token_merge: int = 0) -> "Engine":
        """The engine built for this bundle, backend and machine (library versions, CPU, GPU).

        With `key`, that engine, if it fits. Otherwise the engine of `precision` (None: the
        backend's default precision, or the only engine there is) and token merging (0: none;
        merging is lossy, so only an explicit request gets it): the one built with the default
        options for that precision, or the only one; when several differ, the choice is refused
        with their keys, never guessed.
        """
        from vlrt.runtime import backends

        spec = backends.get(backend)
        target = engine_target(self, spec)
        found = [e for e in _engines(self.root) if key in (None, e.key)]
        fitting = [e for e in found if e.fits(target)]
        if key is not None:
            if found and not fitting:
                differ = found[0].differences(target)
                raise VlrtError(f"{self.root}: engine {key} ({found[0].manifest.get('backend')}, "
                                f"{found[0].manifest.get('precision')}) does not fit here (different "
                                f"{', '.join(differ)})")
            if fitting and precision not in (None, fitting[0].precision):
                raise VlrtError(f"{self.root}: engine {key} is {fitting[0].precision}, not {precision}")
            if fitting:
                fitting[0].verify()
                return fitting[0]
        chosen = _choose(self.root, spec, fitting, precision, token_merge, key=key, stale=len(found) - len(fitting))
        chosen.verify()
        return chosen


@dataclasses.dataclass(frozen=True)
class Engine:
    """One built engine: `engines/<key>/engine.json` and the graphs it lists."""

    root: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def target(self) -> dict[str, Any]:
        """What must equal the machine's for this engine to be used here."""
        m = self.manifest
        return {"backend": m.get("backend"), "source_manifest_sha256": m.get("source", {}).get("manifest_sha256"),
                "versions": m.get("versions", {}), "machine": m.get("machine")}

    def differences(self, target: dict[str, Any]) -> list[str]:
        """The fields of `target` (see engine_target) this engine was built for otherwise."""
        mine = self.target()
        differ = [k for k, v in target.items() if k != "versions" and mine[k] != v]
        return differ + [k for k, v in target["versions"].items() if mine["versions"].get(k) != v]

    def fits(self, target: dict[str, Any]) -> bool:
        return not self.differences(target)

    def options(self) -> dict[str, Any]:
        return self.manifest.get("options", {})

    def is_default(self, backend: Any) -> bool:
        """Built with the backend's default options for its precision: no structural pass beyond
        token merging, the default int8 mode and the fp32 fallback."""
        opts = self.options()
        passes = [p.get("name") for ps in opts.get("graph_passes", {}).values() for p in ps]
        if any(p != "token-merge" for p in passes):
            return False
        return self.precision != "int8" or (opts.get("mode", "static") == backend.default_int8_mode
                                            and opts.get("inference_precision", "f32") == "f32")

    def describe(self) -> str:
        """One line: key, backend, precision and the options that matter to a user."""
        opts = self.options()
        parts = [self.manifest.get("backend"), self.precision]
        if self.precision == "int8" and "mode" in opts:
            parts.append(f"{opts['mode']} int8")
        if self.precision == "int8" and opts.get("inference_precision", "f32") != "f32":
            parts.append(f"{opts['inference_precision']} fallback")
        parts += [p["name"] + (f" {p['token_merge']}" if "token_merge" in p else "")
                  for p in opts.get("graph_passes", {}).get("video", [])]
        return f"engine {self.key} ({', '.join(str(p) for p in parts)})"

    def graph_path(self, graph: str) -> Path:
        try:
            return self.root / self.manifest["graphs"][graph]["file"]
        except KeyError:
            raise VlrtError(f"{self.root}: the engine has no {graph!r} graph") from None

    def verify(self) -> None:
        if engine_key(self.manifest) != self.key:
            raise VlrtError(f"{self.root / ENGINE_MANIFEST}: its recorded build inputs do not hash to its key "
                            f"{self.key}; the engine was modified, rebuild it with `vlrt build ... --force`")
        # A TensorRT graph entry is its plan, and lists the ONNX graph it was built from under "onnx";
        # an OpenVINO IR entry is its .xml, and lists its weights (.bin) under "weights".
        files = [e for g in self.manifest["graphs"].values() for e in (g, g.get("onnx"), g.get("weights")) if e]
        for entry in files:
            path = self.root / entry["file"]
            actual = sha256_file(path) if path.is_file() else "missing"
            if actual != entry["sha256"]:
                raise VlrtError(f"{path}: sha256 {actual[:16]}... does not match engine.json's {entry['sha256'][:16]}...; "
                                f"the engine was modified or corrupted, rebuild it with `vlrt build ... --force`")


def _check_schema(root: Path, manifest: dict[str, Any]) -> None:
    version = str(manifest.get("schema_version") or f"{manifest.get('bundle_version')}.0")
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise VlrtError(f"{root / MANIFEST}: unreadable schema version {version!r}")
    if int(major) > BUNDLE_VERSION:
        raise VlrtError(f"{root}: bundle schema {version} was written by a newer vlrt; this vlrt reads schema "
                        f"{BUNDLE_VERSION}.x: upgrade vlrt, or export the checkpoint again with this one")
    if int(major) < BUNDLE_VERSION or manifest.get("bundle_version") != int(major):
        raise VlrtError(f"{root}: bundle schema {version} (bundle_version {manifest.get('bundle_version')!r}) is not "
                        f"one this vlrt reads ({BUNDLE_VERSION}.x); export the checkpoint again")


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


def engine_machine(backend: Any) -> dict[str, Any]:
    """The machine an engine for `backend` (a registry entry) is keyed by: the CPU, and what the
    backend adds (TensorRT: the GPU)."""
    return {**machine_fingerprint(), **backend.key_machine()}


def engine_target(bundle: Bundle, backend: Any) -> dict[str, Any]:
    """What an engine must have been built for to be used here (compared with Engine.target())."""
    return {"backend": backend.name, "source_manifest_sha256": bundle.manifest_sha256,
            "versions": backend.key_versions(), "machine": engine_machine(backend)}


def _choose(root: Path, backend: Any, fitting: list[Engine], precision: str | None, token_merge: int, *,
            key: str | None, stale: int) -> Engine:
    merged = [e for e in fitting if token_merge_of(e.manifest) == token_merge]
    wanted = precision or backend.default_precision
    same = [e for e in merged if e.precision == wanted]
    if precision is None and not same and len({e.precision for e in merged}) == 1:
        same = merged  # no precision asked, and every engine here has the same one
    if not same:
        raise VlrtError(_no_engine_message(root, backend.name, wanted, key, stale=stale + len(fitting) - len(same),
                                           token_merge=token_merge))
    if len(same) == 1:
        return same[0]
    default = [e for e in same if e.is_default(backend)]
    if default and all(e.options() == default[0].options() for e in default):
        # one recipe, built again by another vlrt or onnx version: the latest build is the one to run
        return max(default, key=lambda e: e.manifest.get("created", ""))
    listing = "; ".join(e.describe() for e in sorted(same, key=lambda e: e.key))
    what = "with different default options" if default else "and none is the default build"
    raise VlrtError(f"{root}: {len(same)} {wanted} engines fit here {what}: {listing}; choose one with --engine KEY")


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
