"""Reading checkpoint files into plain mappings, safely.

Pickles load with `torch.load(weights_only=True)`; TorchScript archives through `torch.jit.load`
(their code is TorchScript, not arbitrary Python); full unpickling only when the caller passes
`trust_pickle=True`, because unpickling an untrusted file can run any code.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from vlrt.errors import VlrtError

SUPPORTED_FILES = (
    "a PyTorch checkpoint (.pt/.pth/.bin, incl. CLIP4Clip pytorch_model.bin.N; also gzip-compressed, .gz)",
    "a TorchScript archive (OpenAI CLIP release)",
    "a .safetensors file",
    "a Hugging Face CLIPModel directory (config.json + model.safetensors or pytorch_model.bin)",
    "an open_clip model directory (open_clip_config.json + open_clip_model.safetensors or "
    "open_clip_pytorch_model.bin)",
)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclasses.dataclass
class RawCheckpoint:
    path: Path
    container: str  # "torchscript" | "pickle" | "safetensors" | "hf-dir"
    data: dict[str, Any]  # what the file holds: a state dict or a wrapper around one
    hf_config: dict[str, Any] | None = None
    hf_preprocessor: dict[str, Any] | None = None
    open_clip_config: dict[str, Any] | None = None  # open_clip_config.json beside the weights


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> RawCheckpoint:
    path = Path(path)
    if not path.exists():
        raise VlrtError(f"{path}: no such file or directory")
    if path.is_dir():
        # Hub uploads of open_clip models may hold both forms; Hugging Face's wins where complete.
        has_hf = (path / "config.json").is_file() and any((path / w).is_file() for w in HF_WEIGHTS)
        if not has_hf and (path / OPEN_CLIP_CONFIG).is_file():
            return _read_open_clip_dir(path, trust_pickle=trust_pickle)
        return _read_hf_dir(path, trust_pickle=trust_pickle)
    raw = _read_file(path, trust_pickle=trust_pickle)
    beside = path.parent / OPEN_CLIP_CONFIG
    if beside.is_file():
        raw.open_clip_config = _read_json(beside)
    return raw


def _read_file(path: Path, *, trust_pickle: bool) -> RawCheckpoint:
    if path.stat().st_size == 0:
        raise VlrtError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        return RawCheckpoint(path, "safetensors", _read_safetensors(path))
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        return RawCheckpoint(path, "torchscript", _read_torchscript(path))
    if path.suffix == ".gz":  # a gzip-compressed torch.save file (vlrt ships its model this way)
        return RawCheckpoint(path, "pickle", _read_pickle(path, trust_pickle=trust_pickle, gz=True))
    return RawCheckpoint(path, "pickle", _read_pickle(path, trust_pickle=trust_pickle))


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _read_torchscript(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript, but OpenAI's released checkpoints are TorchScript.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise VlrtError(f"{path}: unreadable TorchScript archive (truncated or corrupt?): {_first_line(exc)}") from None
    return dict(module.state_dict())


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise VlrtError(f"{path}: unreadable safetensors file (truncated or corrupt?): {_first_line(exc)}") from None


def _read_pickle(path: Path, *, trust_pickle: bool, gz: bool = False) -> dict[str, Any]:
    try:
        source = io.BytesIO(gzip.decompress(path.read_bytes())) if gz else str(path)
        data = torch.load(source, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise VlrtError(
                f"{path}: holds Python objects ({found.group(1)}) that only full unpickling can load, "
                "and unpickling can run arbitrary code; if you trust this file, pass --trust-pickle"
            ) from None
        # Other refusals ("Unsupported operand 103") come from bytes that are no torch checkpoint.
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise VlrtError(f"{path}: not a checkpoint this tool reads "
                        f"({detail.group(1).strip() if detail else _first_line(exc)}); "
                        f"supported: {'; '.join(SUPPORTED_FILES)}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:  # OSError covers bad gzip
        raise VlrtError(f"{path}: unreadable checkpoint (truncated or corrupt?): {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler fail in any way
        # (IndexError, KeyError, struct.error, UnicodeDecodeError, ... seen on random input).
        raise VlrtError(f"{path}: not a checkpoint this tool reads ({type(exc).__name__}: "
                        f"{_first_line(exc)}); supported: {'; '.join(SUPPORTED_FILES)}") from None
    if not isinstance(data, dict):
        raise VlrtError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return data


def _read_hf_dir(path: Path, *, trust_pickle: bool) -> RawCheckpoint:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise VlrtError(f"{path}: a directory without config.json; export a checkpoint file, "
                        "or a Hugging Face model directory")
    found = next((path / w for w in HF_WEIGHTS if (path / w).is_file()), None)
    if found is None:
        raise VlrtError(f"{path}: no model.safetensors or pytorch_model.bin beside config.json "
                        "(sharded checkpoints are not supported yet)")
    data = (_read_safetensors(found) if found.suffix == ".safetensors"
            else _read_pickle(found, trust_pickle=trust_pickle))
    preprocessor = path / "preprocessor_config.json"
    return RawCheckpoint(
        path, "hf-dir", data,
        hf_config=_read_json(config_file),
        hf_preprocessor=_read_json(preprocessor) if preprocessor.is_file() else None,
    )


def _read_open_clip_dir(path: Path, *, trust_pickle: bool) -> RawCheckpoint:
    found = next((path / w for w in OPEN_CLIP_WEIGHTS if (path / w).is_file()), None)
    if found is None:
        raise VlrtError(f"{path}: no {' or '.join(OPEN_CLIP_WEIGHTS)} beside {OPEN_CLIP_CONFIG}")
    raw = _read_file(found, trust_pickle=trust_pickle)
    raw.open_clip_config = _read_json(path / OPEN_CLIP_CONFIG)
    return raw


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VlrtError(f"{path}: unreadable JSON: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
