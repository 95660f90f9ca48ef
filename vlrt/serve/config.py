"""The service's settings: one dataclass, filled from flags, then `VLRT_*` environment variables,
then these defaults."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError


@dataclasses.dataclass
class ServeConfig:
    bundle: str | None = None  # a bundle directory (optional with `index`: the index's recorded bundle)
    index: str | None = None  # an index directory made by `vlrt embed`
    host: str = "127.0.0.1"
    port: int = 8080
    writable: bool = False  # POST /v1/index/videos adds to the index
    media_root: str | None = None  # clients may name files under this directory, and nowhere else
    api_key: str | None = None  # required on every endpoint but /healthz, /readyz and the page
    engine: str | None = None  # an engine key, or "auto"; None: the index's engine, else Runtime.load's default
    threads: int | None = None  # encoder threads per session
    text_batch: int = 32
    text_wait_ms: float = 5.0
    text_queue: int = 256
    video_batch: int = 16
    video_wait_ms: float = 50.0
    video_queue: int = 64
    decode_workers: int = 2
    worker_memory_mb: int = 1024
    request_timeout_s: float = 120.0
    max_upload_mb: float = 256.0
    max_duration_s: float = 3600.0
    max_width: int = 7680
    max_height: int = 4320
    max_frames: int = 1_000_000
    max_texts: int = 256  # texts in one /v1/embed/text request
    max_k: int = 1000
    upload_dir: str | None = None  # where uploads added to a writable index are kept (default INDEX/uploads)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **given: Any) -> "ServeConfig":
        """`given` (flags; None means not given) over `VLRT_<FIELD>` variables over the defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if given.get(field.name) is not None:
                values[field.name] = given[field.name]
                continue
            raw = env.get(f"VLRT_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _parse(field, raw)
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise VlrtError(f"unknown serve settings: {', '.join(sorted(unknown))}")
        return cls(**values).checked()

    def checked(self) -> "ServeConfig":
        if self.bundle is None and self.index is None:
            raise VlrtError("vlrt serve needs a bundle, an index (--index), or both")
        if self.writable and self.index is None:
            raise VlrtError("--writable needs --index: the index that uploads are added to")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise VlrtError(f"--media-root {self.media_root}: not a directory")
        for name in ("text_batch", "text_queue", "video_batch", "video_queue", "decode_workers", "max_texts", "max_k"):
            if getattr(self, name) < 1:
                raise VlrtError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise VlrtError("the API key must be at least 8 characters")
        return self

    def public(self) -> dict[str, Any]:
        """The settings without the API key (for logs and /readyz)."""
        out = dataclasses.asdict(self)
        out["api_key"] = "set" if self.api_key else None
        return out


def _parse(field: dataclasses.Field, raw: str) -> Any:
    kind = str(field.type)
    try:
        if kind.startswith("bool"):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise VlrtError(f"VLRT_{field.name.upper()}={raw!r}: not a valid {kind.split(' ')[0]}") from None
    return raw
