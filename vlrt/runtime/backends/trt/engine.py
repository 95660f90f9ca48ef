"""How `vlrt build` makes a TensorRT engine: its extra options, and a plan from each passed graph.

TensorRT builds strongly typed networks, so the ONNX graph decides the precision: FP16 from the
fp16 graph (the default), INT8 from symmetric Q/DQ calibrated on --calib videos, fp32 from the
bundle's own graph. There is no dynamic int8 for TensorRT. The build's gate then runs the plans.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError


class TrtEngineBuild:
    """The tensorrt backend's build hook (see `vlrt.build.engine`)."""

    accepts_plugins = True

    def options(self, plugins: Sequence[str | Path]) -> dict[str, Any]:
        from vlrt.runtime.backends import trt
        from vlrt.runtime.bundle import sha256_file

        for p in plugins:
            if not Path(p).is_file():
                raise VlrtError(f"--plugin {p}: no such file")
        return {"max_batch": dict(trt.MAX_BATCH), "opt_batch": dict(trt.OPT_BATCH), "tf32": False,
                "plugins": [{"path": str(Path(p).resolve()), "sha256": sha256_file(Path(p))} for p in plugins]}

    def artifacts(self, bundle: Any, precision: str, options: dict[str, Any], out: Path,
                  graphs: dict[str, dict[str, Any]], seconds: dict[str, float],
                  progress: Callable[[str], None], *, calibration: Sequence[Path] = ()) -> dict[str, dict[str, Any]]:
        """A plan from each passed graph; a graph's entry becomes its plan, listing its ONNX.
        `calibration` is unused: an int8 graph passed here already holds its calibrated Q/DQ."""
        from vlrt.runtime.backends import trt
        from vlrt.runtime.bundle import sha256_file

        cache = timing_cache_path(bundle)
        built = {}
        for name, entry in graphs.items():
            t0 = time.perf_counter()
            progress(f"TensorRT: building the {precision} {name} plan")
            profiles = trt.profile_shapes(bundle.manifest, name, max_batch=options["max_batch"][name],
                                          opt_batch=options["opt_batch"][name])
            plan_file = out / f"{name}.plan"
            info = trt.build_plan(out / entry["file"], plan_file, profiles=profiles, precision=precision,
                                  timing_cache=cache, plugin_libraries=[p["path"] for p in options["plugins"]],
                                  progress=progress)
            seconds[f"{name} plan"] = time.perf_counter() - t0
            source = {k: entry.pop(k) for k in ("file", "sha256", "bytes")}  # the ONNX graph; pass reports stay
            built[name] = {"file": plan_file.name, "sha256": sha256_file(plan_file),
                           "bytes": plan_file.stat().st_size, "onnx": source, **entry, "tensorrt": info}
        return built

    def gate_runner(self, path: Path, options: dict[str, Any]):
        """The gate runs what will run: a TensorRT plan on the GPU (an ONNX file: ORT CPU)."""
        from vlrt.runtime.backends import trt

        if path.suffix == ".onnx":
            return None
        return trt.TrtRunner(trt.PlanFromFile(path))  # the build loaded the plugin libraries into this process


def timing_cache_path(bundle: Any) -> Path:
    """One timing cache per TensorRT version and GPU, shared by every build of the bundle."""
    from vlrt.runtime.backends import trt
    from vlrt.runtime.bundle import ENGINES

    gpu = trt.gpu_fingerprint()
    name = "-".join(["tensorrt", trt.tensorrt_version(), gpu["name"], "sm" + gpu["compute_capability"]])
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in name)
    return bundle.root / ENGINES / ".timing-cache" / f"{safe}.cache"
