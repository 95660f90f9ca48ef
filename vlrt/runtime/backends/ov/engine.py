"""How `vlrt build` makes an OpenVINO engine: int8 OpenVINO IR quantized by NNCF; bf16 and fp32
as the ONNX graphs plus the inference precision OpenVINO compiles them with.

    int8  each graph (the bundle's, or a structural pass's output) converted with
          `openvino.convert_model` and quantized by `nncf.quantize` (ModelType.TRANSFORMER:
          int8 weights and activations for the transformer MatMuls) on feeds from the --calib
          videos (`FrameCalibration`) and the calibration captions (`CaptionCalibration`); the
          patch embedding and the embedding tail stay fp32, as in the ONNX int8 passes. Written
          as IR: video.xml + video.bin, text.xml + text.bin. Runs with inference precision f32,
          or bf16 with --int8-fallback bf16 (the ops NNCF left unquantized computed in bf16; CPUs
          with native bf16 only).
    bf16  the ONNX graphs as passed (the bundle's own, linked), with the option
          `inference_precision: bf16`; only on CPUs with native bf16 (avx512_bf16 or amx_bf16),
          since OpenVINO runs bf16 in f32 elsewhere.
    fp32  the bundle's own graphs: nothing to build (unless a structural pass applies).

The hook's artifacts make the precision (`owns_precision`), so vlrt's ONNX precision passes
(Q/DQ, fp16) do not run; the gate runs the engine on OpenVINO with the engine's options.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU features OpenVINO computes bf16 with
VIDEO_BATCH = 4  # calibration videos per NNCF sample
TEXT_BATCH = 10  # calibration captions per NNCF sample
# SmoothQuant, which NNCF applies to transformers by default, is off: it lowered the min cosine vs
# fp32 on both models it was tried on (the embedded default model's frame embeddings 0.988 with it,
# 0.998 without; the tiny test model's token embeddings 0.991 and 0.997), docs/build.md.
INT8_OPTIONS = {"mode": "static", "format": "OpenVINO IR", "quantizer": "nncf", "model_type": "transformer",
                "smooth_quant": False, "weights": "int8", "activations": "int8 (calibrated)",
                "kept_fp32": ["patch embedding", "embedding tail"], "inference_precision": "f32"}


def native_bf16(machine: dict[str, Any]) -> bool:
    return any(flag in machine["isa"] for flag in BF16_FLAGS)


class OvEngineBuild:
    """The openvino backend's build hook (see `vlrt.build.engine`)."""

    owns_precision = True  # the engine's precision comes from these artifacts and options, not ONNX passes

    def options(self, plugins: Sequence[str | Path]) -> dict[str, Any]:
        return {}

    def precision_options(self, precision: str, int8_mode: str | None, *, fallback: str | None = None) -> dict[str, Any]:
        """What makes the precision, as engine options. bf16, and int8 with `fallback` "bf16"
        (what int8 leaves unquantized computed in bf16), are refused here, before any work, on a
        CPU without native bf16."""
        from vlrt.runtime.bundle import machine_fingerprint

        if precision == "bf16" or fallback == "bf16":
            machine = machine_fingerprint()
            if not native_bf16(machine):
                isa = ", ".join(machine["isa"]) or "none listed"
                flag = "--precision bf16" if precision == "bf16" else "--int8-fallback bf16"
                instead = "--precision int8 (with --calib DIR) or fp32" if precision == "bf16" else "the fp32 fallback"
                raise VlrtError(f"{flag} needs a CPU with native bf16 ({' or '.join(BF16_FLAGS)}); this one "
                                f"({machine['cpu']}; ISA flags: {isa}) has neither, and OpenVINO would compute the "
                                f"engine in f32: use {instead}")
            if precision == "bf16":
                return {"inference_precision": "bf16"}
        if precision == "int8":
            return {**INT8_OPTIONS, "inference_precision": "bf16" if fallback == "bf16" else "f32"}
        return {}

    def artifacts(self, bundle: Any, precision: str, options: dict[str, Any], out: Path,
                  graphs: dict[str, dict[str, Any]], seconds: dict[str, float],
                  progress: Callable[[str], None], *, calibration: Sequence[Path] = ()) -> dict[str, dict[str, Any]]:
        """int8: each passed graph becomes NNCF-quantized IR (its entry: the .xml, its .bin under
        "weights", the ONNX it came from under "converted_from", which is not kept). bf16 and
        fp32: the passed ONNX graphs, unchanged."""
        if precision != "int8":
            return graphs
        if not calibration:
            raise VlrtError("OpenVINO int8 is calibrated: pass --calib DIR, a folder of videos like the ones you will embed")
        return {name: self._quantize(bundle, name, entry, out, calibration, seconds, progress)
                for name, entry in graphs.items()}

    def gate_runner(self, path: Path, options: dict[str, Any]):
        """The gate runs what will run: the graph (IR or ONNX) on OpenVINO, with the engine's
        inference precision."""
        from vlrt.runtime.backends.ov.runner import OvModel, OvRunner, inference_precision

        return OvRunner(OvModel(path, precision=inference_precision(options)))

    def _quantize(self, bundle: Any, name: str, entry: dict[str, Any], out: Path, calibration: Sequence[Path],
                  seconds: dict[str, float], progress: Callable[[str], None]) -> dict[str, Any]:
        import onnx

        from vlrt.build.passes import CAPTIONS, CaptionCalibration, FrameCalibration, PassReport, count_ops
        from vlrt.build.passes.int8 import kept_in_fp32
        from vlrt.runtime.backends.ov.runner import import_openvino
        from vlrt.runtime.backends.ov.split import FEATURES_RT_INFO
        from vlrt.runtime.bundle import sha256_file
        from vlrt.runtime.frameskip import _features_tensor
        from vlrt.runtime.tokenizer import ClipTokenizer

        ov, nncf = import_openvino(), import_nncf()
        t0 = time.perf_counter()
        src = out / entry["file"]
        graph = onnx.load(str(src))
        keep = kept_in_fp32(graph)
        features = _features_tensor(graph) if name == "video" else None
        progress(f"OpenVINO: converting the {name} graph")
        model = ov.convert_model(str(src))
        ignored = sorted(keep & {op.get_friendly_name() for op in model.get_ordered_ops()})
        if name == "video":
            reader = FrameCalibration(bundle.manifest, calibration, batch_size=VIDEO_BATCH)
            samples = math.ceil(len(calibration) / VIDEO_BATCH)
        else:
            tokenizer = ClipTokenizer(bundle.path(bundle.manifest["tokenizer"]["file"]))
            reader = CaptionCalibration(tokenizer, context_length=bundle.max_words, batch_size=TEXT_BATCH)
            samples = math.ceil(len(CAPTIONS) / TEXT_BATCH)
        progress(f"NNCF: quantizing the {name} graph ({samples} calibration batches)")
        with _nncf_off_stdout():
            quantized = nncf.quantize(model, nncf.Dataset(_Samples(reader)), subset_size=samples,
                                      **quantize_settings(ignored))
        if features is not None:  # where the split (split.py) cuts this graph
            quantized.set_rt_info(features, FEATURES_RT_INFO)
        xml = out / f"{name}.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)  # the fp32 parts stay fp32
        weights = xml.with_suffix(".bin")
        source = {k: entry[k] for k in ("file", "sha256", "bytes")}
        src.unlink()
        seconds[f"{name} nncf"] = time.perf_counter() - t0
        ops = [op.get_type_name() for op in quantized.get_ordered_ops()]
        by_op = count_ops(graph, set(ignored))
        report = PassReport(name="int8-nncf", nodes=len(ops), kept_fp32=sum(by_op.values()), kept_fp32_by_op=by_op,
                            changed={"FakeQuantize": ops.count("FakeQuantize")},
                            options={"subset_size": samples, "ignored_scope": len(ignored)})
        earlier = [*entry.get("passes", []), *([entry["pass"]] if entry["pass"]["name"] != "none" else [])]
        built = {"file": xml.name, "sha256": sha256_file(xml), "bytes": xml.stat().st_size,
                 "weights": {"file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size},
                 "converted_from": source, "pass": report.to_dict(), "passes": earlier}
        if features is not None:
            built["features"] = features
        return built


def quantize_settings(ignored: Sequence[str], *, smooth_quant: bool = False) -> dict[str, Any]:
    """`nncf.quantize`'s keywords for vlrt's OpenVINO int8: a transformer, the `ignored` ops
    (by friendly name) kept fp32, SmoothQuant off unless asked (`benchmarks/ov_int8_settings.py`
    times each setting against NNCF's defaults)."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    advanced = AdvancedQuantizationParameters() if smooth_quant else \
        AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))  # -1: off
    return {"model_type": nncf.ModelType.TRANSFORMER, "ignored_scope": nncf.IgnoredScope(names=list(ignored)),
            "advanced_parameters": advanced}


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise VlrtError('OpenVINO int8 engines are quantized with NNCF: pip install "vlrt[openvino]"') from None
    return nncf


class _Samples:
    """A calibration reader as NNCF's data source: iterable again for each statistics pass."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.reader.rewind()
        return iter(self.reader.get_next, None)


@contextlib.contextmanager
def _nncf_off_stdout() -> Iterator[None]:
    """NNCF logs to stdout and draws progress bars there, where `vlrt build --json` writes its
    result: while it runs, its warnings and errors go to stderr and its progress bars nowhere
    (vlrt's own progress reports the steps)."""
    from nncf.common.logging import nncf_logger

    handlers = [h for h in nncf_logger.handlers if type(h) is logging.StreamHandler]  # its stdout handler
    streams = [h.stream for h in handlers]
    for handler in handlers:  # not setStream, which flushes the old stream: it may be closed by now
        handler.stream = sys.stderr
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)
        for handler, stream in zip(handlers, streams):
            handler.stream = stream
