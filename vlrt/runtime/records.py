"""Per-frame records stored in int8: half the bytes of fp16, read back in chunks.

An index that keeps per-frame records (`Index.create(..., keep_frames=True)`, always for a
multi-grained model) stores them in fp16 by default. With `frames_dtype="int8"` each per-frame
embedding is stored as int8 with one fp16 scale (its largest magnitude / 127), and the per-frame
scalars a scorer takes (DRL's frame weights) stay fp16 beside them. `Int8Records` holds the three
arrays and behaves, where the index reads records, like the (n, T, D [+ scalars]) array it
replaces: rows taken from it (`records[ids]`, `records[a:b]`) come back as float32, dequantized;
`records[..., :D]` is the embeddings part, still int8; `records[..., D + i]` is a scalar column.
So frame selection and `Runtime.score` read an int8 index chunk by chunk, never all of it at once.
Measured loss (benchmarks/results/rerank-cpu.md): max |score difference| about 1e-3 against fp32,
top-10 overlap 99.9-100%.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FRAMES_DTYPES = ("fp16", "int8")


def quantize(record: Any, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, T, dim [+ S]) records -> int8 embeddings (n, T, dim), fp16 scales (n, T), fp16 scalars
    (n, T, S) or None. A zero vector (a padded frame) keeps scale 0 and stays zero."""
    record = np.asarray(record, np.float32)
    emb = record[..., :dim]
    peak = np.abs(emb).max(axis=-1)  # (n, T)
    scale = (peak / 127.0).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)[..., None]
    q = np.clip(np.rint(emb / safe), -127, 127).astype(np.int8)
    extra = record[..., dim:].astype(np.float16) if record.shape[-1] > dim else None
    return q, scale, extra


class Int8Records:
    """Records kept as int8 embeddings + fp16 scales (+ fp16 scalar columns); see the module docstring."""

    def __init__(self, q: np.ndarray, scale: np.ndarray, extra: np.ndarray | None) -> None:
        self.q, self.scale, self.extra = q, scale, extra

    @property
    def dim(self) -> int:
        return int(self.q.shape[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        width = self.dim + (self.extra.shape[-1] if self.extra is not None else 0)
        return (*self.q.shape[:-1], width)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes + (self.extra.nbytes if self.extra is not None else 0)

    def __len__(self) -> int:
        return len(self.q)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis:
            col = key[1]
            if isinstance(col, slice) and col.start in (None, 0) and col.stop == self.dim and col.step in (None, 1):
                return Int8Records(self.q, self.scale, None)  # the embeddings part, still int8
            if isinstance(col, (int, np.integer)) and self.extra is not None and self.dim <= col < self.shape[-1]:
                return self.extra[..., col - self.dim]
            raise IndexError(f"int8 records take [..., :{self.dim}] or [..., {self.dim}+i]; got [..., {col!r}]")
        rows = self.q[key].astype(np.float32) * self.scale[key].astype(np.float32)[..., None]
        if self.extra is None:
            return rows
        return np.concatenate([rows, self.extra[key].astype(np.float32)], axis=-1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)
