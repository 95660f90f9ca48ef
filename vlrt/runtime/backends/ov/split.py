"""The video graph cut into its per-frame tower and its head, for ONNX graphs and OpenVINO IR.

tower: pixels -> the projected per-frame features (B, T, D), the output of the Reshape right
after the vision projection; head: those features + frame_mask -> the video graph's outputs.
ONNX graphs are cut by `vlrt.runtime.frameskip.split_video_graph`. OpenVINO IR is cut as an
`openvino.Model`: the tower ends at the features tensor, and the head starts at a new Parameter
that takes its place. An IR graph has no vision-projection weight name left to find the cut by
(NNCF's transformations rename constants), so `vlrt build` records the features tensor's name,
which conversion keeps, in the IR's rt_info under `FEATURES_RT_INFO`. Both parts are cached
under $XDG_CACHE_HOME/vlrt/split/<key>/, the key hashing the .xml's sha256, the .bin's and the kept outputs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vlrt.errors import VlrtError

FEATURES_RT_INFO = ["vlrt", "video_features"]  # rt_info path of the features tensor's name in a video IR


def split_video(path: Path, sha256: str, outputs: tuple[str, ...]) -> tuple[Path, Path, str]:
    """(tower file, head file, features tensor name) of the video graph at `path` (.onnx or
    OpenVINO IR .xml), cached. `sha256`: the graph file's (as recorded in the manifest);
    `outputs`: the video graph's outputs the head keeps."""
    path = Path(path)
    if path.suffix == ".onnx":
        from vlrt.runtime.frameskip import features_name, split_video_graph

        tower, head = split_video_graph(path, sha256, outputs)
        return tower, head, features_name(tower)
    if path.suffix != ".xml":
        raise VlrtError(f"{path}: not an ONNX graph or OpenVINO IR (.xml); the video graph cannot be cut")
    return _split_ir(path, sha256, outputs)


def features_tensor(model, path: Path) -> str:
    """The features tensor's name `vlrt build` recorded in a video IR."""
    if not model.has_rt_info(FEATURES_RT_INFO):
        raise VlrtError(f"{path}: this OpenVINO IR does not record its frame-features tensor ({'/'.join(FEATURES_RT_INFO)} "
                        "in rt_info; `vlrt build --backend openvino` writes it), so it cannot be cut; rebuild the engine")
    return str(model.get_rt_info(FEATURES_RT_INFO).astype(str))


def _split_ir(path: Path, sha256: str, outputs: tuple[str, ...]) -> tuple[Path, Path, str]:
    from vlrt.runtime.backends.ov.runner import core, import_openvino
    from vlrt.runtime.bundle import sha256_file

    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise VlrtError(f"{path}: its weights {weights.name} are missing")
    key = hashlib.sha256(f"{sha256}\n{sha256_file(weights)}\n{','.join(outputs)}\n".encode()).hexdigest()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlrt" / "split" / key
    tower, head, name_file = base / "video_frames.xml", base / "video_head.xml", base / "features"
    if tower.is_file() and head.is_file() and name_file.is_file():
        return tower, head, name_file.read_text()
    ov = import_openvino()
    model = core().read_model(str(path))
    cut = features_tensor(model, path)
    parts = {tower: _tower(ov, model, cut, path), head: _head(ov, model.clone(), cut, outputs, path)}
    try:
        base.mkdir(parents=True, exist_ok=True)
        name_file.write_text(cut)  # before the graphs, whose presence marks the split done
        for target, part in parts.items():
            tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.xml")
            ov.save_model(part, str(tmp), compress_to_fp16=False)
            tmp.with_suffix(".bin").replace(target.with_suffix(".bin"))  # the weights first: the .xml marks it done
            tmp.replace(target)
    except OSError as exc:
        raise VlrtError(f"cannot write the cut video graph under {base} ({exc.strerror}); set XDG_CACHE_HOME to a "
                        "writable folder") from None
    return tower, head, cut


def _port(model, name: str, path: Path):
    for op in model.get_ordered_ops():
        for port in op.outputs():
            if name in port.get_names():
                return port
    raise VlrtError(f"{path}: no tensor {name!r}, the frame features its rt_info names; rebuild the engine")


def _tower(ov, model, cut: str, path: Path):
    """pixels -> features."""
    try:
        return ov.Model([_port(model, cut, path)], [model.input("pixels").get_node()], "video_frames")
    except RuntimeError as exc:
        raise VlrtError(f"{path}: the frame features {cut!r} do not come from the pixels alone, so the graph cannot "
                        f"be cut there ({str(exc).strip().splitlines()[-1]})") from None


def _head(ov, model, cut: str, outputs: tuple[str, ...], path: Path):
    """features + frame_mask -> `outputs`; `model` is modified (pass a clone)."""
    port = _port(model, cut, path)
    features = _opset().parameter(port.get_partial_shape(), port.get_element_type(), name=cut)
    features.output(0).get_tensor().set_names({cut})
    port.get_tensor().set_names(set())
    for target in list(port.get_target_inputs()):
        target.replace_source_output(features.output(0))
    _shapes_from_features(model, features, path)
    results = {name: r for r in model.get_results() for name in r.output(0).get_names()}
    missing = [name for name in outputs if name not in results]
    if missing:
        raise VlrtError(f"{path}: the video graph has no output {', '.join(missing)}")
    try:
        return ov.Model([results[name] for name in outputs], [features, model.input("frame_mask").get_node()],
                        "video_head")
    except RuntimeError as exc:
        raise VlrtError(f"{path}: the head after the frame features {cut!r} needs more than them and the frame mask, "
                        f"so the graph cannot be cut there ({str(exc).strip().splitlines()[-1]})") from None


def _shapes_from_features(model, features, path: Path) -> None:
    """OpenVINO's conversion lets the head take the batch and frame counts from the pixels' shape
    (one ShapeOf(pixels) serves the whole graph); in the head, that shape is rebuilt from the
    features' (B, T) and the pixels' static (3, H, W), which is what it equals."""
    import numpy as np

    ops = _opset()
    pixels = model.input("pixels")
    tail = pixels.get_partial_shape()[2:]
    for target in list(pixels.get_target_inputs()):
        node = target.get_node()
        if node.get_type_name() != "ShapeOf":
            continue
        if not tail.is_static:
            raise VlrtError(f"{path}: the pixels' channel and image dimensions are not static ({pixels.get_partial_shape()}); "
                            "the graph cannot be cut at the frame features")
        dtype = np.int64 if node.get_output_element_type(0).get_type_name() == "i64" else np.int32
        batch_frames = ops.gather(ops.shape_of(features, output_type=node.get_output_element_type(0)),
                                  ops.constant(np.array([0, 1], np.int64)), ops.constant(np.int64(0)))
        shape = ops.concat([batch_frames, ops.constant(np.array(tail.to_shape(), dtype))], 0)
        for consumer in list(node.output(0).get_target_inputs()):
            consumer.replace_source_output(shape.output(0))


def _opset():
    import openvino.opset13 as ops

    return ops
