"""`vlrt serve` against `vlrt serve --ray` (Ray Serve, 1 and 2 replicas) on the same machine, with
the embedded model and an index of synthetic clips; server and client on loopback.

For each server (started by the CLI, as a user would): text queries (POST /v1/search) at 8 and 32
concurrent clients, then 16 concurrent video uploads; throughput, latency, and the batches formed
(from /metrics: a single process's own; under Ray Serve, that of whichever replica answered).

  python benchmarks/serve_ray.py --work /tmp/serve-ray-bench -o benchmarks/results/serve-ray-cpu.json
  python benchmarks/serve_ray.py --quick   # a smoke run: a few requests per step
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import RESULTS, machine, stages, write_result
from serve_load import Server, prepare

from vlrt.bench import serve as load

SERVERS = {  # name -> flags after the common ones
    "vlrt serve (one process)": (),
    "vlrt serve --ray, 1 replica": ("--ray", "--replicas", "1", "--replica-cpus", "0.5"),
    "vlrt serve --ray, 2 replicas": ("--ray", "--replicas", "2", "--replica-cpus", "0.5"),
}
COMMON = ("--text-batch", "32", "--text-wait-ms", "5", "--video-batch", "16", "--video-wait-ms", "50",
          "--decode-workers", "2", "--threads", "2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/vlrt-serve-ray-bench")
    p.add_argument("--videos", type=int, default=32, help="clips in the index and in the upload pool")
    p.add_argument("--quick", action="store_true")
    p.add_argument("-o", "--out", default=str(RESULTS / "serve-ray-cpu.json"))
    args = p.parse_args()
    say = stages()
    _, index, clips, queries = prepare(Path(args.work), args.videos, say)
    scale = 0.1 if args.quick else 1.0
    result = {"machine": machine(), "videos": len(clips), "model": "the embedded model (vlrt/assets)",
              "quick": args.quick, "servers": []}
    for name, flags in SERVERS.items():
        say(f"{name}: starting ...")
        server = Server(index, *COMMON, *flags, start_s=300)
        row = {"server": name}
        try:
            load.text_latency(server.url, queries, clients=8, requests=40)  # warm-up: every replica's first calls
            for clients in (8, 32):
                say(f"{name}: text queries, {clients} clients ...")
                row[f"text_{clients}"] = load.text_latency(server.url, queries, clients=clients,
                                                           requests=max(clients, int(100 * clients ** 0.5 * scale)),
                                                           seconds=60)
            load.video_throughput(server.url, clips[:4], clients=4, requests=8)
            say(f"{name}: videos, 16 concurrent uploads ...")
            row["video_16"] = load.video_throughput(server.url, clips, clients=16, requests=max(16, int(96 * scale)),
                                                    seconds=120)
        finally:
            row["shutdown_seconds"] = server.stop()
        result["servers"].append(row)
    write_result(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# `vlrt serve` against Ray Serve replicas{' (quick run)' if r['quick'] else ''}", "",
             f"Machine: {r['machine']}. Model: {r['model']}; index of {r['videos']} synthetic H.264 clips. "
             "Servers and the load client on the same machine, loopback; each Ray Serve replica reserves 0.5 CPU "
             "of a local 2-CPU Ray cluster; every server has 2 decode workers (per replica) and 2 encoder threads.", "",
             "| server | text q/s, 8 clients | p50 / p99 ms | text q/s, 32 clients | p50 / p99 ms | videos/s, 16 uploads | p50 / p99 ms | statuses |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["servers"]:
        t8, t32, v = row["text_8"], row["text_32"], row["video_16"]
        statuses = {k: sum(x["statuses"].get(k, 0) for x in (t8, t32, v)) for k in
                    sorted({k for x in (t8, t32, v) for k in x["statuses"]})}
        lines.append(f"| {row['server']} | {t8['per_s']} | {t8['p50_ms']} / {t8['p99_ms']} | "
                     f"{t32['per_s']} | {t32['p50_ms']} / {t32['p99_ms']} | {v['videos_per_s']} | "
                     f"{v['p50_ms']} / {v['p99_ms']} | {statuses} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
