"""`vlrt build --auto` against its peers on this CPU, in one process, timed interleaved.

For each model (the embedded model; ViT-B/32 and ViT-B/16 geometry with random weights):
  1. `build_auto`: every CPU candidate built, gated and timed here; the fastest that passes is
     the auto choice (for the embedded model with the Recall@1 gate on its 243 test clips).
  2. One interleaved timing on the same frames (calibration videos, every frame slot filled: a short clip's frames repeated) of:
       eager PyTorch fp32       the reference model, torch.inference_mode
       plain ORT fp32           the bundle's video.onnx, default SessionOptions, whole graph
       every candidate that passed, through `vlrt.Runtime` (the auto choice marked)
       OpenVINO int8 (peer)     as a user would make it without vlrt: `openvino.convert_model`
                                of video.onnx, `nncf.quantize(model_type=TRANSFORMER)` calibrated
                                on the same calibration frames, compiled with the LATENCY hint
                                and OpenVINO's default inference precision (bf16 on CPUs with
                                native bf16, f32 elsewhere; recorded)
  3. For the embedded model, Recall@1 both ways on the 243 test clips for each.

    python benchmarks/auto_cpu.py --models embedded,ViT-B-32,ViT-B-16 --workdir /tmp/vlrt-auto

Writes benchmarks/results/auto-cpu.json and .md. With --update, only --models run again and the
file's other models keep their entries (and dates); the CPU must be the same.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, stages, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in test-video generator
sys.path.insert(0, str(ROOT / "benchmarks"))


def prepare(work: Path, model: str, progress) -> tuple[Path, Path, Path, tuple[list[str], list[str]] | None]:
    """(bundle, checkpoint, calibration folder, gallery) for one model, made once per workdir."""
    from vlrt.bench.quality import write_gallery

    work.mkdir(parents=True, exist_ok=True)
    calib = work / "calib"
    if model == "embedded":
        from vlrt.assets import default_checkpoint, unpack_default_bundle

        bundle = work / "bundle"
        if not (bundle / "vlrt.json").is_file():
            unpack_default_bundle(bundle)
        write_gallery(calib, 8, split="train")
        paths, scenes = write_gallery(work / "videos", None)
        return bundle, default_checkpoint(), calib, (paths, [s.caption for s in scenes])
    from e2e import make_bundle
    from video_assets import write_video

    bundle = work / "bundle"
    if not (bundle / "vlrt.json").is_file():
        progress(f"exporting a random-weight {model}")
        make_bundle(work, model)
    calib.mkdir(exist_ok=True)
    for i in range(8):
        path = calib / f"calib{i}.mp4"
        if not path.is_file():
            write_video(path, width=320 + 32 * i, height=240, frames=24 * 6, fps=24, gop=48)
    return bundle, work / "model.pt", calib, None


def openvino_peer(bundle, videos: list[Path], threads: int, progress, config: dict | None = None):
    """OpenVINO int8 made the standard way (NNCF defaults for transformers), or why not; `config`:
    more compile properties (PERF_COUNT for a per-op profile)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        return None, f"not installed ({exc.name})"
    from vlrt.build.passes import FrameCalibration

    reader = FrameCalibration(bundle.manifest, videos)
    feeds = []
    while (batch := reader.get_next()) is not None:
        feeds.append(batch)
    progress(f"OpenVINO peer: nncf.quantize on {len(feeds)} calibration batches")
    t0 = time.perf_counter()
    quantized = nncf.quantize(ov.convert_model(str(bundle.graph_path("video"))), nncf.Dataset(feeds),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    compiled = ov.Core().compile_model(quantized, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads, **(config or {})})
    return compiled, {"quantize_and_compile_s": round(time.perf_counter() - t0, 1),
                      "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}


def run_model(model: str, work: Path, *, threads: int, rounds: int, batch: int, progress) -> dict:
    import onnxruntime  # noqa: F401

    from vlrt.bench.metrics import recall_report
    from vlrt.bench.speed import _eager_model, ort_session
    from vlrt.build.auto import Candidate, build_auto, candidate_runtime, time_interleaved, timing_frames
    from vlrt.build.engine import calibration_videos
    from vlrt.runtime.bundle import Bundle

    bundle_dir, checkpoint, calib, gallery = prepare(work, model, progress)
    load_start = os.getloadavg()
    progress(f"{model}: vlrt build --auto")
    t0 = time.perf_counter()
    entry = build_auto(bundle_dir, calib=calib, gallery=gallery, threads=threads, rounds=rounds, batch=batch,
                       progress=progress)
    auto_seconds = time.perf_counter() - t0
    bundle = Bundle.open(bundle_dir)
    videos = calibration_videos(calib)
    pixels, mask = timing_frames(bundle, videos, batch)
    names = bundle.outputs("video")
    calls, encoders = {}, {}
    eager, torch = _eager_model(bundle, str(checkpoint))
    if eager is not None:
        torch.set_num_threads(threads)

        def eager_encode(px, m):
            with torch.inference_mode():
                return eager.encode_video(torch.from_numpy(px), torch.from_numpy(m))[0].numpy()

        encoders["eager PyTorch fp32"] = eager_encode
    plain = ort_session(bundle.graph_path("video"), threads, plain=True)
    encoders["plain ORT fp32"] = lambda px, m: plain.run([names[0]], {"pixels": px, "frame_mask": m})[0]
    for c in entry["candidates"]:
        if c["status"] in ("passed", "chosen"):
            rt = candidate_runtime(bundle, Candidate(c["name"], c["backend"], c["settings"], key=c["key"]), threads)
            encoders[c["name"]] = lambda px, m, rt=rt: rt.encode_frames(px, m, batch_size=len(px))
    peer, peer_info = openvino_peer(bundle, videos, threads, progress)
    if peer is not None:
        out_port = next(o for o in peer.outputs if names[0] in o.get_names())
        encoders["OpenVINO int8 (NNCF defaults, peer)"] = \
            lambda px, m: peer({"pixels": px, "frame_mask": m})[out_port]
    for name, encode in encoders.items():
        calls[name] = lambda encode=encode: encode(pixels, mask)
    progress(f"{model}: timing {len(calls)} configurations, {rounds} interleaved rounds")
    medians = time_interleaved(calls, rounds)
    reference = encoders["plain ORT fp32"](pixels, mask)
    rows = []
    for name, encode in encoders.items():
        got = encode(pixels, mask)
        cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        rows.append({"name": name, "frames_per_s": float(mask.sum()) / medians[name], "median_s": medians[name],
                     "min_cos_vs_plain": float(cos.min()), "auto_choice": name == entry["choice"]["name"]})
    if gallery is not None:
        from vlrt.runtime.pipeline import ClipLoader, stack_clips

        progress(f"{model}: Recall@1 of the peers on {len(gallery[0])} clips")
        loader = ClipLoader(bundle.manifest)
        gp, gm = stack_clips([loader(p) for p in gallery[0]])
        text = candidate_runtime(bundle, Candidate("text", "ort-cpu", {"precision": "fp32"}), threads)
        captions = text.encode_text(gallery[1])
        recall = {c["name"]: c.get("recall") for c in entry["candidates"]}
        for row in rows:
            if recall.get(row["name"]):
                row["recall"] = recall[row["name"]]
            elif row["name"] != "eager PyTorch fp32" or eager is not None:
                v = np.concatenate([encoders[row["name"]](gp[i:i + 16], gm[i:i + 16]) for i in range(0, len(gp), 16)])
                v = v / np.linalg.norm(v, axis=1, keepdims=True)
                report = recall_report(captions @ v.T)
                row["recall"] = {k: report[k] for k in ("t2v_R@1", "v2t_R@1")}
    by = {r["name"]: r for r in rows}
    for row in rows:
        row["vs_plain_ort"] = row["frames_per_s"] / by["plain ORT fp32"]["frames_per_s"]
        if peer is not None:
            row["vs_openvino_int8"] = row["frames_per_s"] / by["OpenVINO int8 (NNCF defaults, peer)"]["frames_per_s"]
    ort_rows = [r for r in rows if r["name"].startswith("ort-cpu")]
    best_ort = max(ort_rows, key=lambda r: r["frames_per_s"])
    return {"model": model, "bundle_vision": bundle.manifest["model"]["vision"], "frames": f"{len(pixels)} videos x "
            f"{mask.shape[1]} frames", "threads": threads, "rounds": rounds, "load_start": load_start,
            "load_end": os.getloadavg(), "auto_seconds": round(auto_seconds, 1), "auto": entry,
            "openvino_peer": peer_info,
            "rows": rows, "best_ort": best_ort["name"]}


def markdown(result: dict) -> str:
    lines = [f"# `vlrt build --auto` and its peers ({result['date']})", "", f"{result['machine']}.", "",
             "Per model: one interleaved timing (median of the rounds, after a warm-up round) on the same "
             "calibration frames, every frame slot filled (a short clip's frames repeated), so engines do equal work; candidates run through `vlrt.Runtime`. "
             "Cosine: video embeddings against plain ORT fp32. `python benchmarks/auto_cpu.py`.", ""]
    for m in result["models"]:
        v = m["bundle_vision"]
        peer = m["openvino_peer"]
        lines += [f"## {m['model']} (vision width {v['width']}, patch {v['patch_size']}, {v['image_size']} px; "
                  f"{m['frames']}, {m['threads']} threads, {m['rounds']} rounds; measured {m.get('date', result['date'])})",
                  "",
                  f"Load average {m['load_start'][0]:.2f} at the start, {m['load_end'][0]:.2f} at the end. "
                  f"`build_auto` took {m['auto_seconds']:.0f} s; OpenVINO peer: {peer}.", "",
                  "| configuration | frames/s | × plain ORT | × OpenVINO int8 | min cos | t2v R@1 | v2t R@1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            rec = r.get("recall") or {}
            name = f"**{r['name']} (auto choice)**" if r["auto_choice"] else r["name"]
            lines.append(f"| {name} | {r['frames_per_s']:.1f} | {r['vs_plain_ort']:.2f} | "
                         f"{r.get('vs_openvino_int8', float('nan')):.2f} | {r['min_cos_vs_plain']:.5f} | "
                         f"{rec.get('t2v_R@1', '')} | {rec.get('v2t_R@1', '')} |")
        best = next(r for r in m["rows"] if r["name"] == m["best_ort"])
        lines += ["", f"Best ONNX Runtime engine: {best['name']}, {best.get('vs_openvino_int8', float('nan')):.2f}× "
                  "OpenVINO int8.", "", "Candidates as `build_auto` saw them (its own interleaved timing):", "",
                  "| candidate | status | frames/s | build s |", "|---|---|---|---|"]
        for c in m["auto"]["candidates"]:
            build = f"{c['build_s']} (reused)" if c.get("reused") else c.get("build_s", "")
            lines.append(f"| {c['name']} | {c['status'][:120]} | {c.get('frames_per_s', '')} | {build} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="embedded,ViT-B-32,ViT-B-16")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vlrt-auto"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4, help="videos per timed call")
    ap.add_argument("--out", type=Path, default=RESULTS / "auto-cpu.json")
    ap.add_argument("--update", action="store_true",
                    help="rerun only --models and keep the other models' entries of --out (same CPU only)")
    args = ap.parse_args()
    os.environ.setdefault("XDG_CACHE_HOME", str(args.workdir / "cache"))
    progress = stages()
    names = args.models.split(",")
    kept, previous = {}, []
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text())
        if old["machine"] != machine():
            raise SystemExit(f"--update: {args.out} was measured on another CPU ({old['machine']})")
        previous = [m["model"] for m in old["models"]]
        kept = {m["model"]: {"date": old["date"], **m} for m in old["models"] if m["model"] not in names}
    fresh = {}
    for model in names:
        fresh[model] = run_model(model, args.workdir / model, threads=args.threads, rounds=args.rounds,
                                 batch=args.batch, progress=progress)
        fresh[model]["date"] = time.strftime("%Y-%m-%d %H:%M")
    order = previous + [n for n in names if n not in previous]
    models = [fresh.get(n) or kept[n] for n in order]
    result = {"benchmark": "auto", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "models": models}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
