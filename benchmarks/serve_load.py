"""`vlrt serve` under load, on loopback, with the embedded model and an index of synthetic clips.

Starts the server as a subprocess (the CLI, as a user would), then with a bounded concurrent
client (vlrt/bench/serve.py; every loop bounded in requests and seconds):
  1. text-query latency (POST /v1/search {"text"}) at 1, 8 and 32 concurrent clients, and at 32
     against a server that encodes one query per batch (--text-batch 1);
  2. video-embedding throughput at 16 concurrent uploads with dynamic batching (--video-batch 16)
     against a server that encodes one video at a time (--video-batch 1), and the batch sizes the
     server formed (from its /metrics);
  3. overload: 4x the upload concurrency of step 2, texts and videos mixed, for a bounded time:
     the answers by status, the server's RSS (with its decode workers) sampled throughout, and
     whether it answers /healthz and a search afterwards.

  python benchmarks/serve_load.py --work /tmp/serve-bench -o benchmarks/results/serve-cpu.json
  python benchmarks/serve_load.py --quick   # a smoke run: a few requests per step
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from common import RESULTS, machine, stages, write_result

from vlrt.bench import serve as load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the decode workers), MiB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


class Server:
    def __init__(self, index: Path, *flags: str, start_s: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "vlrt.cli.main", "serve", "--index", str(index), "--port", str(self.port), *flags]
        self.log = open(index.parent / f"server-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not get ready; see {self.log.name}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=10) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> float:
        """SIGTERM (graceful), then the seconds it took to exit."""
        t0 = time.perf_counter()
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self.log.close()
        return round(time.perf_counter() - t0, 2)


def sample_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(rss_mb(pid))
        stop.wait(0.25)


def prepare(work: Path, videos: int, say) -> tuple[Path, Path, list[str], list[str]]:
    """(bundle, index, clips, queries) under `work`: the embedded model's bundle, `videos`
    synthetic test clips and an index of them (made once), and 64 test captions."""
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench.quality import write_gallery
    from vlrt.bench.synth import gallery
    from vlrt.runtime.index import Index

    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "bundle"
    if not (bundle / "vlrt.json").is_file():
        unpack_default_bundle(bundle)
    say("writing clips ...")
    clips, _ = write_gallery(work / "clips", videos)
    index = work / "index"
    if not (index / "index.json").is_file():
        say("embedding the index ...")
        with Index.create(index, bundle) as ix:
            ix.add(clips)
    return bundle, index, clips, [s.caption for s, _ in list(gallery("test"))[:64]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/vlrt-serve-bench")
    p.add_argument("--videos", type=int, default=32, help="clips in the index and in the upload pool")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--overload-seconds", type=float, default=20.0)
    p.add_argument("-o", "--out", default=str(RESULTS / "serve-cpu.json"))
    args = p.parse_args()
    say = stages()
    bundle, index, clips, queries = prepare(Path(args.work), args.videos, say)
    scale = 0.1 if args.quick else 1.0
    result = {"machine": machine(), "videos": len(clips), "model": "the embedded model (vlrt/assets)",
              "quick": args.quick}

    say("server with dynamic batching (--video-batch 16) ...")
    # queues sized for the steps below (32 text clients, 16 uploads), so that the overload step
    # (64 clients) meets full queues
    queues = ("--text-queue", "32", "--video-queue", "16")
    server = Server(index, "--video-batch", "16", "--video-wait-ms", "50", "--text-batch", "32", "--text-wait-ms", "5",
                    "--decode-workers", "2", *queues)
    try:
        load.text_latency(server.url, queries, clients=4, requests=20)  # warm-up
        result["text"] = []
        for clients in (1, 8, 32):
            say(f"text queries, {clients} clients ...")
            result["text"].append(load.text_latency(server.url, queries, clients=clients,
                                                    requests=max(clients, int(100 * clients ** 0.5 * scale)),
                                                    seconds=60))
        load.video_throughput(server.url, clips[:4], clients=4, requests=8)  # warm-up
        before = load.metrics(server.url)
        say("videos, 16 concurrent uploads, batched ...")
        result["video_batched"] = load.video_throughput(server.url, clips, clients=16,
                                                        requests=max(16, int(96 * scale)), seconds=120)
        after = load.metrics(server.url)
        result["video_batched"]["batches"] = load.diff_batches(before, after, "video")
        result["video_batched"]["stage_ms"] = load.stage_means(before, after)
        say("overload ...")
        stop, samples = threading.Event(), []
        sampler = threading.Thread(target=sample_rss, args=(server.proc.pid, stop, samples))
        rss_before = rss_mb(server.proc.pid)
        sampler.start()
        try:
            over = load.overload(server.url, queries, clips, clients=64,
                                 seconds=max(3.0, args.overload_seconds * scale))
        finally:
            stop.set()
            sampler.join()
        over["rss_mb_before"], over["rss_mb_max"] = rss_before, max(samples)
        over["healthy_after"] = server.healthy()
        over["search_after"] = load.text_latency(server.url, queries, clients=1, requests=3)["statuses"]
        result["overload"] = over
    finally:
        result["shutdown_seconds"] = server.stop()

    say("server encoding one video and one query at a time (--video-batch 1 --text-batch 1) ...")
    single = Server(index, "--video-batch", "1", "--video-wait-ms", "0", "--text-batch", "1", "--text-wait-ms", "0",
                    "--decode-workers", "2", *queues)
    try:
        say("text queries, 32 clients, one query per batch ...")
        result["text_batch1"] = load.text_latency(single.url, queries, clients=32,
                                                  requests=max(32, int(100 * 32 ** 0.5 * scale)), seconds=60)
        load.video_throughput(single.url, clips[:4], clients=4, requests=8)
        before = load.metrics(single.url)
        result["video_batch1"] = load.video_throughput(single.url, clips, clients=16,
                                                       requests=max(16, int(96 * scale)), seconds=120)
        after = load.metrics(single.url)
        result["video_batch1"]["batches"] = load.diff_batches(before, after, "video")
        result["video_batch1"]["stage_ms"] = load.stage_means(before, after)
    finally:
        single.stop()
    say("the encoder alone, batch 1 against 16 ...")
    result["encoder_alone"] = encoder_alone(bundle, rounds=2 if args.quick else 7)
    b, s = result["video_batched"]["videos_per_s"], result["video_batch1"]["videos_per_s"]
    result["batching_speedup"] = round(b / s, 2) if b and s else None
    write_result(args.out, result, markdown(result))


def encoder_alone(bundle: Path, *, rounds: int) -> dict:
    """What batching can give at most: the video encoder in this process, no decoding and no HTTP,
    videos/s at batch 1 and at batch 16 on the same 16 clips' worth of frames, interleaved rounds,
    best round of each."""
    import numpy as np

    from vlrt.runtime.runtime import Runtime

    rt = Runtime.load(bundle)
    t, size = int(rt.bundle.manifest["max_frames"]), rt.bundle.image_size
    pixels = np.random.default_rng(0).standard_normal((16, t, 3, size, size)).astype(np.float32)
    best = {1: float("inf"), 16: float("inf")}
    for _ in range(rounds):
        for batch in best:
            t0 = time.perf_counter()
            for i in range(0, 16, batch):
                rt.encode_frames(pixels[i:i + batch], batch_size=batch)
            best[batch] = min(best[batch], time.perf_counter() - t0)
    out = {f"batch{b}_videos_per_s": round(16 / sec, 1) for b, sec in best.items()}
    out["speedup"] = round(best[1] / best[16], 2)
    return out


def markdown(r: dict) -> str:
    lines = [f"# `vlrt serve` under load ({'quick smoke run' if r['quick'] else 'full run'})", "",
             f"Machine: {r['machine']}. Model: {r['model']}; index of {r['videos']} synthetic H.264 clips. "
             "Server and client on the same machine, loopback.", "",
             "## Text queries (POST /v1/search, k=10)", "",
             "| clients | requests ok | queries/s | p50 ms | p95 ms | p99 ms | statuses |", "|---|---|---|---|---|---|---|"]
    for t in r["text"]:
        lines.append(f"| {t['clients']} | {t['ok']} | {t['per_s']} | {t['p50_ms']} | {t['p95_ms']} | {t['p99_ms']} | "
                     f"{json.dumps(t['statuses'])} |")
    t = r["text_batch1"]
    lines.append(f"| 32, one query per batch (--text-batch 1) | {t['ok']} | {t['per_s']} | {t['p50_ms']} | {t['p95_ms']} | "
                 f"{t['p99_ms']} | {json.dumps(t['statuses'])} |")
    lines += ["", "## Video embedding, 16 concurrent uploads (POST /v1/embed/video)", "",
              "| server | videos ok | videos/s | p50 ms | p99 ms | batches formed | mean batch | sizes | mean ms per stage |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, key in (("dynamic batching (--video-batch 16)", "video_batched"), ("one at a time (--video-batch 1)",
                                                                                  "video_batch1")):
        v = r[key]
        lines.append(f"| {name} | {v['ok']} | {v['videos_per_s']} | {v['p50_ms']} | {v['p99_ms']} | "
                     f"{v['batches']['batches']} | {v['batches']['mean']} | {json.dumps(v['batches']['sizes'])} | "
                     f"{json.dumps(v['stage_ms'])} |")
    e = r["encoder_alone"]
    lines += ["", f"Dynamic batching: **{r['batching_speedup']}x** the videos/s of one-at-a-time. The encoder alone "
              f"(this process, no decoding, no HTTP) encodes {e['batch1_videos_per_s']} videos/s at batch 1 and "
              f"{e['batch16_videos_per_s']} at batch 16 ({e['speedup']}x): that bounds what batching can add here, "
              "where decoding, HTTP and the load client share the same cores.", "",
              "## Overload: 64 closed-loop clients (4x the 16 concurrent uploads above), texts and videos mixed",
              "", "Server queues: 32 text requests, 16 decoded videos, 2 + 16 uploads at the decoders.", ""]
    o = r["overload"]
    lines += [f"- answers by status over {o['seconds']} s: {json.dumps(o['statuses'])}",
              f"- server RSS with its decode workers: {o['rss_mb_before']} MiB before, {o['rss_mb_max']} MiB at most",
              f"- /healthz afterwards: {'200' if o['healthy_after'] else 'no answer'}; a search afterwards: "
              f"{json.dumps(o['search_after'])}",
              f"- graceful shutdown (SIGTERM) took {r['shutdown_seconds']} s", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
