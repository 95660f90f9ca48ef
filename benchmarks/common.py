"""Shared by the benchmark scripts: where results go and how they are written."""
from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(out: str | Path, result: dict, markdown: str) -> None:
    """The JSON result and its markdown table side by side (same name, .json and .md)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)


def machine() -> str:
    """The CPU model, its vector extensions and core count: results hold only on such a CPU."""
    from vlrt.runtime.bundle import machine_fingerprint

    m = machine_fingerprint()
    return f"{m['cpu']} ({m['arch']}; {', '.join(m['isa'])}), {os.cpu_count()} cores, no GPU"


def stages():
    """A progress callback for long steps: one line on stderr per stage, with elapsed seconds."""
    import sys
    import time

    t0 = time.perf_counter()
    return lambda message: print(f"[{time.perf_counter() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def random_bundle(work: str | Path, config: str) -> Path:
    """The random-weight bundle of `config` in `work`, made once per workdir and reused after:
    a full-size architecture by name (ViT-B-32, ...; seqTransf head, 4 layers, as e2e.py makes
    it), or "tiny", the test suite's tiny CLIP4Clip (4 frames), for smoke runs of the scripts."""
    import sys

    work = Path(work)
    bundle = work / "bundle"
    if (bundle / "vlrt.json").is_file():
        return bundle
    work.mkdir(parents=True, exist_ok=True)
    if config == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from checkpoint_writers import TINY_C4C, write_clip4clip

        from vlrt.export import export_checkpoint

        source = write_clip4clip(work / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
        return export_checkpoint(source, bundle, max_frames=4).bundle
    from e2e import make_bundle

    return make_bundle(work, config)


def calibration_videos(folder: str | Path, n: int) -> Path:
    """`n` generated H.264 clips (6 s, moving frame-index patterns; tests/video_assets.py) in
    `folder`, made once: calibration videos for static int8 engines."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from video_assets import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"calib{i}.mp4"
        if not path.is_file():
            write_video(path, width=320 + 32 * i, height=240, frames=24 * 6, fps=24, gop=48)
    return folder


def load_snapshot() -> dict:
    """What else the machine was doing, read at one end of a measured run: load averages, and the
    machine's CPU time counters (/proc/stat) and this process's own CPU time, which `contention`
    turns into shares over the run."""
    import resource
    import time

    own = resource.getrusage(resource.RUSAGE_SELF)
    snap = {"time": time.time(), "loadavg": [round(x, 2) for x in os.getloadavg()], "own_cpu_s": own.ru_utime + own.ru_stime}
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        snap["proc_stat"] = fields  # user nice system idle iowait irq softirq steal, in clock ticks
    except (OSError, ValueError):
        pass
    return snap


def contention(start: dict, end: dict) -> dict:
    """Load averages at the start and end of a run and, on Linux, the share of the machine's CPU
    time over the run that was busy outside this process, and stolen by the hypervisor."""
    out = {"loadavg_start": start["loadavg"], "loadavg_end": end["loadavg"],
           "seconds": round(end["time"] - start["time"], 1)}
    if "proc_stat" in start and "proc_stat" in end:
        d = [b - a for a, b in zip(start["proc_stat"], end["proc_stat"])]
        total = sum(d) or 1
        tick = os.sysconf("SC_CLK_TCK")
        busy = d[0] + d[1] + d[2] + d[5] + d[6]
        own = (end["own_cpu_s"] - start["own_cpu_s"]) * tick
        out["busy_outside_this_process_pct"] = round(100 * max(0.0, busy - own) / total, 1)
        out["steal_pct"] = round(100 * d[7] / total, 1)
    return out


def contention_line(c: dict) -> str:
    """One markdown sentence for `contention`'s figures."""
    s = (f"Load averages (1, 5, 15 min) {', '.join(map(str, c['loadavg_start']))} at the start and "
         f"{', '.join(map(str, c['loadavg_end']))} at the end of the {c['seconds']:.0f} s run")
    if "busy_outside_this_process_pct" in c:
        s += (f"; over the run {c['busy_outside_this_process_pct']}% of the machine's CPU time was busy outside "
              f"this process and {c['steal_pct']}% was stolen by the hypervisor")
    return s + "."


def workload_args(parser, name: str, quick_help: str) -> None:
    """--config, --workdir, --out and --quick, as the full-size benchmark scripts share them; `name`:
    the result's name (benchmarks/results/NAME-cpu.json)."""
    parser.add_argument("--config", default="ViT-B-32", help="model architecture, or 'tiny' (smoke runs)")
    parser.add_argument("--workdir", default="/tmp/vlrt-bench-vit-b32",
                        help="bundle, engines, videos and what the script makes (reused)")
    parser.add_argument("--out", help=f"result JSON (default: benchmarks/results/{name}-cpu.json)")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def run_workload(parser, args, name: str, quick: dict, run, markdown) -> None:
    """Run `run(args)` and write its result with `markdown`. With --quick: the tiny model and the
    `quick` settings, a workdir of its own unless one was given, and the result in the workdir."""
    if args.quick:
        vars(args).update(config="tiny", **quick)
        if args.workdir == parser.get_default("workdir"):
            args.workdir = "/tmp/vlrt-bench-tiny"
    out = args.out or (Path(args.workdir) / f"{name}-quick.json" if args.quick else RESULTS / f"{name}-cpu.json")
    result = run(args)
    write_result(out, result, markdown(result))
