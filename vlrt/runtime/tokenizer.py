"""CLIP's byte-level BPE text tokenizer, in plain Python (no torch).

A text encoder exported from a CLIP-family checkpoint only reproduces the reference embeddings
when it is fed exactly the ids CLIP's own tokenizer produces, so every step here follows CLIP:
the same text cleaning, the same pre-tokenizer regex, the same byte-to-unicode table, the same
vocabulary order and the same merge ranks. The merges file is pinned by its sha256.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ftfy
import numpy as np
import regex

from vlrt.errors import VlrtError

VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
BUNDLED_VOCAB = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
N_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of the file, not all of them.

# CLIP's pre-tokenizer: special tokens, English contractions, letter runs, single digits, and
# runs of anything else that is not whitespace.
PRETOKEN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
# `regex`'s \s, as in CLIP. (It differs from str.isspace only on U+001C..U+001F, which ftfy and
# html.unescape have already removed by the time whitespace is collapsed.)
WHITESPACE = regex.compile(r"\s+")
WORD_CACHE_SIZE = 1 << 16


def byte_to_unicode() -> dict[int, str]:
    """BPE works on strings, so each byte needs a visible stand-in: printable Latin-1 bytes stand
    for themselves and the rest are shifted past U+00FF, in CLIP's order (which is also the order
    of the first 256 vocabulary entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return table


def clean(text: str) -> str:
    """Captions from the web carry mojibake, HTML entities (sometimes escaped twice) and ragged
    whitespace; CLIP normalized them away before training, so the ids must be computed the same way."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return WHITESPACE.sub(" ", text).strip().lower()


@dataclass(frozen=True)
class _Tables:
    """Everything derived from the merges file; immutable, so one copy serves every tokenizer."""

    encoder: dict[str, int]
    decoder: list[str]
    ranks: dict[tuple[str, str], int]
    byte_encoder: dict[int, str]
    byte_decoder: dict[str, int]


def _parse_merges(data: bytes, path: Path) -> list[tuple[str, str]]:
    """Line 0 is a version header; CLIP uses only the first N_MERGES merge lines after it."""
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split(" ")) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise VlrtError(f"tokenizer vocabulary {path}: expected {N_MERGES} merge lines of two symbols")
    return merges  # type: ignore[return-value]


def _build_tables(data: bytes, path: Path) -> _Tables:
    """Ids are positions in CLIP's vocabulary list: bytes, bytes ending a word, merges, specials."""
    merges = _parse_merges(data, path)
    byte_encoder = byte_to_unicode()
    chars = list(byte_encoder.values())
    decoder = [*chars, *(c + END_OF_WORD for c in chars), *("".join(m) for m in merges), SOT, EOT]
    return _Tables(
        encoder={token: i for i, token in enumerate(decoder)},
        decoder=decoder,
        ranks={pair: rank for rank, pair in enumerate(merges)},
        byte_encoder=byte_encoder,
        byte_decoder={c: b for b, c in byte_encoder.items()},
    )


_TABLES: dict[str, _Tables] = {}


def _load(path: Path) -> tuple[str, _Tables]:
    """A different merges file silently changes every id, so refuse any file but CLIP's. Tables
    are shared by hash: the ~0.1 s parse then happens once per process, not per tokenizer."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise VlrtError(f"cannot read tokenizer vocabulary {path}: {e.strerror or e}") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != VOCAB_SHA256:
        raise VlrtError(
            f"tokenizer vocabulary {path} has sha256 {actual}, expected {VOCAB_SHA256} (CLIP's "
            "bpe_simple_vocab_16e6.txt.gz)")
    if actual not in _TABLES:
        _TABLES[actual] = _build_tables(data, path)
    return actual, _TABLES[actual]


def merge_word(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-level BPE: repeatedly apply the earliest-learned merge present in the word, to all of
    its non-overlapping occurrences left to right, until no adjacent pair is a known merge."""
    while len(symbols) > 1:
        pairs = zip(symbols, symbols[1:])
        rank, best = min((ranks.get(p, N_MERGES), p) for p in pairs)
        if rank == N_MERGES:
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


class ClipTokenizer:
    """CLIP's tokenizer: text -> (N, context_length) int64 rows of SOT, BPE ids, EOT, zero pad."""

    sot_id: int = 49406
    eot_id: int = 49407
    pad_id: int = 0
    vocab_size: int = 49408

    def __init__(self, vocab_path: str | os.PathLike[str] | None = None) -> None:
        path = Path(vocab_path) if vocab_path is not None else BUNDLED_VOCAB
        self._path = path
        self._sha256, self._tables = _load(path)
        # Captions repeat words constantly; BPE on a word is the slow part, so memoize it per
        # pre-token (bounded, so a long-running server does not grow without limit).
        self._word_ids = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(self._word_ids_uncached)

    @property
    def vocab_path(self) -> Path:
        return self._path

    @property
    def vocab_sha256(self) -> str:
        return self._sha256

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        """The special tokens are whole vocabulary entries, never split into bytes."""
        t = self._tables
        if word in (SOT, EOT):
            return (t.encoder[word],)
        chars = [t.byte_encoder[b] for b in word.encode("utf-8")]
        chars[-1] += END_OF_WORD
        return tuple(t.encoder[s] for s in merge_word(chars, t.ranks))

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned text, without SOT/EOT, so callers can truncate or frame them."""
        if not isinstance(text, str):
            raise VlrtError(f"tokenizer input must be a string, got {type(text).__name__}")
        ids: list[int] = []
        for word in PRETOKEN.findall(clean(text)):
            ids.extend(self._word_ids(word))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """For showing what the model saw. Id 0 is both the pad and the "!" byte inside a word,
        so only trailing zeros (which no encoding ends with) are dropped as padding."""
        values = [int(i) for i in np.asarray(list(ids), dtype=np.int64).reshape(-1)]
        while values and values[-1] == self.pad_id:
            values.pop()
        t = self._tables
        bad = [i for i in values if not 0 <= i < self.vocab_size]
        if bad:
            raise VlrtError(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        data = bytearray()
        for token in (t.decoder[i] for i in values if i not in (self.sot_id, self.eot_id)):
            word_end = token.endswith(END_OF_WORD)
            data.extend(t.byte_decoder[c] for c in (token[:-len(END_OF_WORD)] if word_end else token))
            data.extend(b" " if word_end else b"")
        return data.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | Sequence[str], *, context_length: int) -> np.ndarray:
        """Rows the text encoder takes: SOT, at most context_length - 2 ids (longer texts are cut,
        as CLIP's truncate=True does), EOT, then zeros."""
        if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
            raise VlrtError(f"context_length must be an integer, got {context_length!r}")
        if context_length < 3:
            raise VlrtError(f"context_length must be at least 3 (SOT, one token, EOT), got {context_length}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        out = np.full((len(batch), int(context_length)), self.pad_id, dtype=np.int64)
        for row, text in zip(out, batch):
            ids = [self.sot_id, *self.encode(text)[:context_length - 2], self.eot_id]
            row[:len(ids)] = ids
        return out
