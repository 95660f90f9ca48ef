"""The PyTorch reference model on the GPU in fp16: the GPU path that needs no TensorRT.

The model is `vlrt.models.VideoTextModel`, loaded with `vlrt.export.load_checkpoint` (a bundle
holds only ONNX graphs, so the GPU path starts from the checkpoint). Weights stay fp32 and run
under `torch.autocast(float16)`: matmuls and convolutions in fp16, while LayerNorm, softmax and
norms run in fp32 -- the precision CLIP itself keeps for them. The seqTransf head's key mask
(-1e6 where a frame is padding) overflows to -inf in fp16, which softmax turns into a zero weight;
a mask row with no frame at all would make a whole row -inf (NaN out of softmax, and a mean over
no frames), so `encode_frames` refuses it. Outputs are float32 and L2-normalised, like
`Runtime.encode_frames`.

The encoder runs on a CUDA stream of its own (`stream`), borrowed for each call as
`vlrt.gpu.device.borrowed_stream` says: called from another stream, it waits for that stream's
work first, and that stream then waits for the outputs.

UNVERIFIED ON A GPU: the same code runs on the CPU here (precision "fp32"); parity of fp16 on CUDA
with the fp32 reference (cos >= 0.999) is asserted by tests/gpu/test_gpu_encode.py on a GPU session.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from vlrt.errors import VlrtError
from vlrt.gpu.device import borrowed_stream, new_stream, require_torch, resolve_device

Precision = Literal["fp16", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "fp32")


class GpuEncoder:
    """Frames (and texts) -> embeddings with the reference model on one device."""

    def __init__(self, model: Any, *, device: Any = None, precision: Precision = "fp16",
                 settings: dict[str, Any] | None = None) -> None:
        torch = require_torch()
        if precision not in PRECISIONS:
            raise VlrtError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
        # Sets the CUDA context's flags before the model initialises CUDA, so that FFmpeg's NVDEC
        # can share the context with it later (vlrt.gpu.device).
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type == "cpu":
            raise VlrtError("fp16 autocast is for CUDA devices; on the CPU use precision 'fp32' (or 'bf16')")
        if getattr(model, "scorer", None) is not None:
            raise VlrtError(f"a {model.config.scorer.type} model scores with its scorer over per-frame records, which "
                            "the GPU path does not produce; encode it with vlrt.Runtime (its bundle)")
        self.precision = precision
        self.model = model.to(self.device).eval()
        # High priority: never the same stream as a decoding thread's (those have the default
        # priority), and the GPU's consumer runs first whenever both have work queued.
        self.stream = new_stream(self.device, priority=-1)  # None on the CPU
        self.config = model.config
        # max_frames, max_words, sampling and preprocessing, as a bundle manifest names them.
        self.settings = dict(settings or {})
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[precision]
        self._tokenizer = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: Any = None, precision: Precision = "fp16",
                        **load_options: Any) -> GpuEncoder:
        """Load any checkpoint `vlrt export` reads (options as for `load_checkpoint`)."""
        from vlrt.export.load import load_checkpoint

        loaded = load_checkpoint(path, **load_options)
        settings = {"max_frames": loaded.max_frames, "max_words": loaded.max_words,
                    "sampling": loaded.sampling, "preprocessing": loaded.preprocessing}
        return cls(loaded.model, device=device, precision=precision, settings=settings)

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def autocast(self) -> Any:
        """The precision context every forward pass runs in."""
        if self._dtype is None:
            return contextlib.nullcontext()
        return require_torch().autocast(device_type=self.device.type, dtype=self._dtype)

    def encode_frames(self, pixels: Any, mask: Any = None, *, return_frames: bool = False) -> Any:
        """(B, T, 3, S, S) preprocessed pixels + optional (B, T) prefix mask -> (B, D) float32 video
        embeddings on the device; with `return_frames`, also the (B, T, D) frame embeddings."""
        torch = require_torch()
        pixels, mask = self._check_frames(pixels, mask)
        with borrowed_stream(self.stream) as made, torch.inference_mode(), self.autocast():
            video, frames = self.model.encode_video(pixels, mask)  # (B, D), (B, T, D)
            video, frames = video.float(), frames.float()
            made += [video, frames]
        return (video, frames) if return_frames else video

    def encode_images(self, images: Any) -> Any:
        """(N, 3, S, S) -> (N, D) float32 raw image-tower outputs (no head, no normalisation): the
        encode-only rate the benchmarks time."""
        torch = require_torch()
        images = images.to(self.device)
        with borrowed_stream(self.stream) as made, torch.inference_mode(), self.autocast():
            out = self.model.clip.encode_image(images).float()  # (N, D)
            made.append(out)
        return out

    def encode_text(self, texts: str | Sequence[str]) -> Any:
        """Texts -> (N, D) float32 L2-normalised sentence embeddings on the device."""
        torch = require_torch()
        if self._tokenizer is None:
            from vlrt.runtime.tokenizer import ClipTokenizer

            self._tokenizer = ClipTokenizer()
        words = int(self.settings.get("max_words") or self.config.text.context_length)
        ids = torch.from_numpy(self._tokenizer(texts, context_length=words)).to(self.device)  # (N, L)
        with borrowed_stream(self.stream) as made, torch.inference_mode(), self.autocast():
            sentence, _ = self.model.encode_text(ids)  # (N, D)
            sentence = sentence.float()
            made.append(sentence)
        return sentence

    def _check_frames(self, pixels: Any, mask: Any) -> tuple[Any, Any]:
        torch = require_torch()
        size = self.image_size
        if pixels.dim() != 5 or tuple(pixels.shape[2:]) != (3, size, size):
            raise VlrtError(f"pixels must have shape (B, T, 3, {size}, {size}); got {tuple(pixels.shape)}")
        head = self.config.head
        if head.type == "seqTransf" and pixels.shape[1] > head.max_positions:
            raise VlrtError(f"{pixels.shape[1]} frames per video, "
                            f"the seqTransf head has {head.max_positions} positions")
        # Autocast casts fp16 pixels where it needs to; without it the weights' fp32 must match.
        pixels = pixels.to(self.device, torch.float32 if self._dtype is None else pixels.dtype)
        if mask is None:
            return pixels, torch.ones(pixels.shape[:2], dtype=torch.float32, device=self.device)
        if tuple(mask.shape) != tuple(pixels.shape[:2]):
            raise VlrtError(f"mask must have shape {tuple(pixels.shape[:2])} (B, T); got {tuple(mask.shape)}")
        # Checked where the mask is (a device sync if that is the GPU; the pipeline's is on the host).
        empty = (mask == 0).all(dim=1)  # (B,)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise VlrtError(f"mask rows {rows} select no frame; every video needs at least one (with none, the "
                            "head has nothing to attend to or average, and fp16 turns the embedding into NaN)")
        return pixels, mask.to(self.device, torch.float32)
