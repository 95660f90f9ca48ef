"""`vlrt bench --serve URL` against the in-process server: bounded loads, the answers counted,
the batch sizes read back from /metrics."""
import json
from pathlib import Path

from vlrt.bench import serve as load
from vlrt.cli.main import main


def test_bench_serve_reports_latency_throughput_and_batches(served, capsys):
    folder = Path(served.clips[0]).parent
    code = main(["bench", "--serve", served.url, "--api-key", served.api_key, "--requests", "6",
                 "--e2e-videos", "5", "--videos-dir", str(folder), "--seconds", "60", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["clients"] for t in out["text"]] == [1, 8, 32]
    for t in out["text"]:
        assert t["ok"] == 6 and t["statuses"] == {"200": 6} and t["p50_ms"] <= t["p99_ms"]
    video = out["video"]
    assert video["ok"] == 5 and video["videos_per_s"] > 0
    assert video["batches"]["batches"] >= 1 and sum(video["batches"]["sizes"].values()) == video["batches"]["batches"]


def test_a_wrong_key_is_counted_not_hidden(served):
    got = load.text_latency(served.url, ["a red circle"], clients=2, requests=4, api_key="wrong-key-000")
    assert got["statuses"] == {"401": 4} and got["ok"] == 0 and got["p50_ms"] is None


def test_batch_stats_from_prometheus_text():
    text = "\n".join([
        'vlrt_batch_size_bucket{le="1.0",queue="video"} 2.0', 'vlrt_batch_size_bucket{le="2.0",queue="video"} 2.0',
        'vlrt_batch_size_bucket{le="4.0",queue="video"} 5.0', 'vlrt_batch_size_bucket{le="+Inf",queue="video"} 5.0',
        'vlrt_batch_size_count{queue="video"} 5.0', 'vlrt_batch_size_sum{queue="video"} 11.0',
        'vlrt_batch_size_count{queue="text"} 9.0'])
    assert load.batch_stats(text, "video") == {"batches": 5, "mean": 2.2, "sizes": {"<=1.0": 2, "<=4.0": 3}}
    assert load.diff_batches(text, text, "video") == {"batches": 0, "mean": None, "sizes": {}}


def test_stage_means_between_two_readings():
    before = 'vlrt_stage_seconds_sum{stage="decode"} 1.0\nvlrt_stage_seconds_count{stage="decode"} 4.0'
    after = ('vlrt_stage_seconds_sum{stage="decode"} 3.0\nvlrt_stage_seconds_count{stage="decode"} 8.0\n'
             'vlrt_stage_seconds_sum{stage="encode"} 0.5\nvlrt_stage_seconds_count{stage="encode"} 5.0')
    assert load.stage_means(before, after) == {"decode": 500.0, "encode": 100.0}
