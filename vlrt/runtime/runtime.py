"""`vlrt.Runtime`: a loaded bundle that encodes texts and frames. Never imports torch."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlrt.errors import VlrtError
from vlrt.families import get_head
from vlrt.runtime import backends
from vlrt.runtime.backends import Backend
from vlrt.runtime.bundle import Bundle, Engine
from vlrt.runtime.frameskip import SkipStats, representatives
from vlrt.runtime.tokenizer import ClipTokenizer

BackendName = Literal["ort-cpu", "ort-cuda", "openvino", "tensorrt"]  # the built-in entries of vlrt.runtime.backends
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class Runtime:
    def __init__(self, bundle: Bundle, *, backend: Backend, threads: int | None = None,
                 engine: Engine | None = None, skip_similar: float | None = None, pack: bool = True) -> None:
        _check_supported(bundle)
        self.bundle = bundle
        self.backend = backend.name
        self.engine = engine  # None: the bundle's own fp32 graphs
        self.precision = engine.precision if engine else "fp32"
        graphs = engine or bundle
        if backend.needs_engine and engine is None:
            raise VlrtError(f"the {backend.name} backend runs engines built by `vlrt build --backend {backend.name}`; "
                            "none was given")
        if skip_similar is not None and skip_similar < 0:
            raise VlrtError(f"skip_similar={skip_similar}: a mean absolute difference in levels, >= 0")
        self.skip_similar = skip_similar
        self.skip_stats = SkipStats() if skip_similar is not None else None
        files = {g: graphs.graph_path(g) for g in ("video", "text")}
        self._features, self.pack_note = None, "packing off (pack=False)"
        if pack or skip_similar is not None:
            self._features, self.pack_note = self._split(graphs, backend, files, required=skip_similar is not None)
        options = engine.options() if engine else {}
        self._runners = backend.runners(files, options, threads)
        tok = bundle.manifest["tokenizer"]
        self.tokenizer = ClipTokenizer(bundle.path(tok["file"]))
        self.scorer = bundle.manifest.get("scorer")  # multi-vector families: the scorer graph's spec
        self._threads = threads
        self._scorer_runner = None
        self._zero_frame: np.ndarray | None = None  # tower features of an all-zero image, where scored

    @classmethod
    def load(cls, path: str | Path, *, backend: BackendName | str | None = None, precision: Precision | None = None,
             threads: int | None = None, engine: str | None = None, token_merge: int = 0,
             skip_similar: float | None = None, pack: bool = True) -> "Runtime":
        """Open a bundle. With nothing named (no backend, precision, engine or token merging) and a
        `vlrt build --auto` choice for this machine, or with `engine="auto"`, use that choice.
        With a precision other than fp32, or with token merging, use the engine
        `vlrt build` made for this backend, precision, token merging and machine: the one built
        with the default options for that precision, or the only one (several others: refused,
        listing their keys), or the one whose key is `engine`.
        `skip_similar=T` encodes a sampled frame that differs from the last encoded frame of its
        video by at most T levels of 255 (mean absolute difference) once (vlrt/runtime/frameskip.py).
        `pack=True` (the default) runs the vision tower on the real frames of a batch only, packed
        together, and the temporal head on each video's padded sequence, so a video costs in
        proportion to its sampled frames; it needs the video graph cut in two (the `onnx` package,
        and a backend that runs the parts: not TensorRT's whole-graph plans). Where it cannot,
        every frame slot runs through the tower and `pack_note` says why.
        A backend that runs only built engines (tensorrt) takes its default precision's engine
        when none is given."""
        bundle = Bundle.open(path)
        auto = bundle.auto_choice() if engine == "auto" or (engine is None and backend is None and precision is None
                                                            and not token_merge) else None
        if engine == "auto":
            if auto is None:
                raise VlrtError(f"{bundle.root}: no `vlrt build --auto` choice for this machine; run "
                                f"`vlrt build {bundle.root} --auto` here")
            if backend not in (None, auto["backend"]) or precision not in (None, auto["precision"]) or token_merge:
                raise VlrtError(f"{bundle.root}: the auto choice here is {auto['name']}; it does not match the "
                                "backend, precision or token merging asked for")
        if auto is not None:
            backend, precision, engine = auto["backend"], auto["precision"], auto["key"]
        spec = backends.resolve(backend)
        if precision is not None:
            precision = backends.check_precision(spec, precision)
        if engine is None and precision in (None, "fp32") and not spec.needs_engine and not token_merge:
            return cls(bundle, backend=spec, threads=threads, skip_similar=skip_similar, pack=pack)
        found = bundle.engine(backend=spec.name, precision=precision, key=engine, token_merge=token_merge)
        backends.check_precision(spec, found.precision)
        return cls(bundle, backend=spec, threads=threads, engine=found, skip_similar=skip_similar, pack=pack)

    @property
    def engine_info(self) -> dict[str, Any]:
        """What encodes: backend, precision, engine key (None: the bundle's own fp32 graphs) and
        the engine's build options."""
        return {"backend": self.backend, "precision": self.precision,
                "engine": self.engine.key if self.engine else None,
                "options": self.engine.options() if self.engine else {}, "skip_similar": self.skip_similar,
                "packed": self.packed}

    @property
    def packed(self) -> bool:
        """Whether the vision tower runs on real frames only (see `load`'s `pack`)."""
        return self._features is not None

    def engine_line(self) -> str:
        """One line naming what encodes, for logs and CLI output."""
        what = self.engine.describe() if self.engine else f"the bundle's fp32 graphs ({self.backend})"
        return what + (f", frame skipping at {self.skip_similar}" if self.skip_similar is not None else "")

    @property
    def embed_dim(self) -> int:
        return self.bundle.embed_dim

    def tokenize(self, texts: str | Sequence[str]) -> np.ndarray:
        return self.tokenizer(texts, context_length=self.bundle.max_words)

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Texts -> (N, D) float32 L2-normalised sentence embeddings."""
        name = self.bundle.outputs("text")[0]
        return self.encode_text_outputs(texts, batch_size=batch_size)[name]

    def encode_text_outputs(self, texts: str | Sequence[str], *, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Texts -> every output of the text graph by name (sentence embeddings, per-token
        features and, for a multi-vector family, what its scorer takes), first axis: texts."""
        ids = self.tokenize(texts)  # (N, L)
        if not len(ids):  # the graph's outputs, with no rows
            return {k: v[:0] for k, v in self._runners["text"].infer({"input_ids": self.tokenize([""])}).items()}
        outs = [self._runners["text"].infer({"input_ids": ids[i:i + batch_size]}) for i in range(0, len(ids), batch_size)]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    @property
    def multi_vector(self) -> bool:
        """Whether the model scores with its own scorer graph over per-frame and per-word features."""
        return self.scorer is not None

    def frame_record_names(self) -> list[str]:
        """What `encode_frames(return_frames=True)` returns per frame, in order: the per-frame
        features, then (multi-vector families) every per-frame scalar the scorer takes (DRL's frame
        weights) as one more column each. An index stores this record."""
        embedding, features = self.bundle.outputs("video")
        if not self.multi_vector:
            return [features]
        return [features, *(k for k, axes in self.scorer["video_inputs"].items() if len(axes) == 2 and k != embedding)]

    def split_frame_record(self, record: np.ndarray) -> dict[str, np.ndarray]:
        """A stored per-frame record (N, T, D [+ scalars]) -> {output name: array}."""
        names, d = self.frame_record_names(), self.embed_dim
        out = {names[0]: record[..., :d]}
        out.update({name: record[..., d + i] for i, name in enumerate(names[1:])})
        return out

    def score(self, text: dict[str, np.ndarray], videos: dict[str, np.ndarray], *, chunk: int = 1024) -> np.ndarray:
        """The model's own scores (multi-vector families): text graph outputs for Q captions x
        video features for N videos (the scorer's video inputs by name) -> (Q, N) float32, the
        model's evaluation logits without its logit scale. Runs the bundle's fp32 scorer graph."""
        if not self.multi_vector:
            raise VlrtError(f"{self.bundle.root}: this model scores by a dot product; it has no scorer graph")
        if self._scorer_runner is None:
            from vlrt.runtime.backends.ort import cpu_runners

            path = self.bundle.path(self.scorer["file"])
            self._scorer_runner = cpu_runners({"scorer": path}, {}, self._threads)["scorer"].__enter__()
        spec = self.scorer
        feeds_q = {k: np.ascontiguousarray(text[k], np.float32) for k in spec["text_inputs"]}
        n = len(next(iter(videos.values())))
        out = np.empty((len(next(iter(feeds_q.values()))), n), np.float32)
        for start in range(0, n, chunk):
            feeds = {k: np.ascontiguousarray(videos[k][start:start + chunk], np.float32) for k in spec["video_inputs"]}
            out[:, start:start + chunk] = self._scorer_runner.infer({**feeds_q, **feeds})[spec["output"]]
        return out

    def encode_videos(self, paths: Sequence[str], *, batch_size: int = 8, workers: int = 2,
                      mode: Literal["exact", "fast"] = "exact") -> np.ndarray:
        """Video files -> (N, D) float32 L2-normalised embeddings, sampled and preprocessed as the
        manifest says. A file that cannot be decoded raises VlrtError naming it; `vlrt embed`
        skips such files instead."""
        from vlrt.runtime.pipeline import ClipLoader, encode_stream

        loader = ClipLoader(self.bundle.manifest, mode=mode)
        out = np.zeros((len(paths), self.embed_dim), np.float32)
        encode = lambda px, mask: self.encode_frames(px, mask, return_frames=True)  # noqa: E731
        for i, result in enumerate(encode_stream(paths, loader, encode, batch_size=batch_size, workers=workers)):
            if result.error:
                raise VlrtError(result.error)
            out[i] = result.embedding
        return out

    def encode_frames(self, pixels: np.ndarray, mask: np.ndarray | None = None, *,
                      batch_size: int = 8, return_frames: bool = False):
        """Preprocessed frames (N, T, 3, H, W) + optional (N, T) prefix mask -> (N, D) video embeddings.

        With `return_frames=True` also the (N, T, D) per-frame embeddings (zero where masked, except
        for a family whose scorer reads padded frames: X-CLIP), with one more column per per-frame
        scalar the scorer takes (DRL's frame weights; see `frame_record_names`).
        """
        pixels, mask = self._check_frames(pixels, mask)
        embedding = self.bundle.outputs("video")[0]
        names = self.frame_record_names()
        videos, frames = [], []
        infer = self._infer_packed if self.packed else self._runners["video"].infer
        for i in range(0, len(pixels), batch_size):
            out = infer({"pixels": pixels[i:i + batch_size], "frame_mask": mask[i:i + batch_size]})
            videos.append(out[embedding])
            if return_frames:
                frames.append(np.concatenate([out[names[0]], *(out[k][..., None] for k in names[1:])], axis=-1))
        video = np.concatenate(videos) if videos else np.zeros((0, self.embed_dim), np.float32)
        if return_frames:
            width = self.embed_dim + len(names) - 1
            return video, (np.concatenate(frames) if frames else np.zeros((0, pixels.shape[1], width), np.float32))
        return video

    def _split(self, graphs: Bundle | Engine, backend: Backend, files: dict[str, Path], *,
               required: bool) -> tuple[str | None, str]:
        """Replace the video graph in `files` by its tower and head parts; (features tensor, note).
        Where it cannot be cut: an error if `required` (frame skipping), else (None, why)."""
        path = files["video"]
        try:
            if backend.split_video is None:
                raise VlrtError(f"the {backend.name} backend runs whole-graph engines, which are not split")
            tower, head, features = backend.split_video(path, _graph_sha256(graphs, path), self.bundle.output_names("video"))
        except VlrtError as exc:
            if required:
                raise VlrtError(f"frame skipping: {exc}") from None
            return None, f"not packed: {exc}"
        del files["video"]
        files.update(video_frames=tower, video_head=head)
        return features, "packed: the vision tower runs on real frames only"

    def _infer_packed(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The video graph in two parts: the tower on the batch's real frames (with frame skipping,
        each video's representative frames) packed into one tower batch, the head on the padded
        per-video sequences."""
        pixels, mask = feeds["pixels"], feeds["frame_mask"]
        n, t = mask.shape
        if self.skip_similar is None and mask.all():  # nothing to leave out: the batch as it is, no copies
            encoded = self._runners["video_frames"].infer({"pixels": pixels.reshape(1, n * t, *pixels.shape[2:])})
            return self._runners["video_head"].infer({self._features: encoded[self._features].reshape(n, t, -1),
                                                      "frame_mask": mask})
        if self.skip_similar is None:
            rep = np.where(mask > 0, np.arange(n * t).reshape(n, t), -1)
        else:
            rep = representatives(pixels, mask, self.skip_similar, self.bundle.manifest["preprocessing"]["std"])
        unique = np.unique(rep[rep >= 0])
        flat = pixels.reshape(n * t, *pixels.shape[2:])
        encoded = self._runners["video_frames"].infer({"pixels": flat[unique][None]})[self._features][0]  # (U, D)
        # padded frames take their video's first frame: the head masks them, but its per-frame
        # normalisation must not see zeros (0/0)
        first = (np.arange(n) * t)[:, None]
        slot = np.searchsorted(unique, np.where(rep >= 0, rep, first))  # position of each representative
        features = encoded[slot.reshape(-1)]
        if self.bundle.manifest.get("padded_frames") == "zero-image":
            # the scorer reads padded slots: they hold an all-zero image's features, as unpacked
            features.reshape(n, t, -1)[mask == 0] = self._zero_image_features(pixels.shape[2:])
        if self.skip_stats is not None:
            self.skip_stats.frames += int(mask.sum())
            self.skip_stats.encoded += len(unique)
        return self._runners["video_head"].infer({self._features: features.reshape(n, t, -1), "frame_mask": mask})

    def _zero_image_features(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._zero_frame is None:
            zeros = np.zeros((1, 1, *shape), np.float32)
            self._zero_frame = self._runners["video_frames"].infer({"pixels": zeros})[self._features][0, 0]
        return self._zero_frame

    def _check_frames(self, pixels: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        size = self.bundle.image_size
        if pixels.ndim != 5 or pixels.shape[2:] != (3, size, size):
            raise VlrtError(f"pixels must have shape (N, T, 3, {size}, {size}); got {pixels.shape}")
        head = self.bundle.manifest["head"]
        limit = self.bundle.manifest["model"]["head"].get("max_positions") or None
        if limit and get_head(head).positional and pixels.shape[1] > limit:
            raise VlrtError(f"{pixels.shape[1]} frames per video, the {head} head has {limit} positions")
        if mask is None:
            return pixels, np.ones(pixels.shape[:2], np.float32)
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        if mask.shape != pixels.shape[:2]:
            raise VlrtError(f"mask must have shape {pixels.shape[:2]} (N, T); got {mask.shape}")
        if not np.isin(mask, (0.0, 1.0)).all() or (np.diff(mask, axis=1) > 0).any() or (mask[:, 0] == 0).any():
            raise VlrtError("mask must be a prefix mask per video: 1 for the first n >= 1 frames, 0 after")
        return pixels, mask


def _graph_sha256(graphs: Bundle | Engine, path: Path) -> str:
    """The recorded sha256 of the video graph (checked when the bundle or engine was opened)."""
    if isinstance(graphs, Engine):
        return graphs.manifest["graphs"]["video"]["sha256"]
    return next(e["sha256"] for e in graphs.manifest["files"] if e["name"] == path.name)


def _check_supported(bundle: Bundle) -> None:
    """Refuse what this runtime cannot encode correctly, rather than encode it wrongly."""
    kind = bundle.manifest.get("embedding", "vector")
    if kind not in ("vector", "multi-vector") or (kind == "multi-vector" and "scorer" not in bundle.manifest):
        what = f"{kind!r} without a scorer graph" if kind == "multi-vector" else repr(kind)
        raise VlrtError(f"{bundle.root}: its family ({bundle.manifest.get('family')}) embeds {what}, "
                        "which this vlrt cannot score")
    tokenizer = bundle.manifest["tokenizer"].get("type")
    if tokenizer != "clip-bpe":
        raise VlrtError(f"{bundle.root}: tokenizer {tokenizer!r}; this vlrt has the clip-bpe tokenizer only")
