"""`vlrt bench`: retrieval quality of a bundle, and agreement with a reference bundle."""
import json
import subprocess
import sys
from importlib import resources

import pytest

from vlrt.export import export_checkpoint


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = resources.files("vlrt").joinpath("assets", "default_model.pt.gz")
    return export_checkpoint(str(model), root / "b").bundle


def bench(*args):
    res = subprocess.run([sys.executable, "-m", "vlrt", "bench", *map(str, args), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_bench_equals_the_demo_and_agrees_with_itself(default_bundle, tmp_path):
    out = bench(default_bundle, "--reference", default_bundle, "--videos", 40, "--cache", tmp_path / "clips")
    recorded = json.loads(resources.files("vlrt").joinpath("assets", "demo_figures.json").read_text())["40"]
    assert out["quality"] == {k: v for k, v in recorded.items() if k in out["quality"]}
    assert out["top1_agreement_t2v"] == 100.0 and out["min_video_cosine"] > 0.99999


def test_bench_reports_disagreement_with_another_model(default_bundle, tmp_path):
    from checkpoint_writers import TINY_C4C, write_clip4clip

    other = export_checkpoint(write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="meanP"),
                              tmp_path / "other", max_frames=8).bundle
    out = bench(default_bundle, "--reference", other, "--videos", 20, "--cache", tmp_path / "clips")
    assert out["top1_agreement_t2v"] < 50  # a random model ranks differently


def test_speed_table_of_every_configuration(default_bundle, tmp_path):
    """`--speed` on the embedded model: every configuration timed in one run, engines built on
    the way, ratios and FLOPs consistent, quality columns filled, JSON/markdown/plot written."""
    out = bench(default_bundle, "--speed", "--token-merge", "2", "--skip-similar", "1", "--quality", "--videos", 12, "--e2e-videos", 4,
                "--repeats", 1, "--warmup", 1, "--cache", tmp_path / "clips", "-o", tmp_path / "speed")
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == ["eager PyTorch fp32", "ORT fp32, plain export", "ORT fp32 + fused attention", "int8 dynamic",
                          "int8 dynamic + fused attention", "int8 dynamic + token merge 2",
                          "int8 dynamic + skip similar 1"]
    skip = rows.pop("int8 dynamic + skip similar 1")  # not an encoder speed: fewer frames reach it
    assert "frames_per_s" not in skip and 0 < skip["e2e_frames"]["encoded"] <= skip["e2e_frames"]["sampled"]
    assert skip["quality"]["top1_agreement_t2v"] >= 75
    plain = rows["ORT fp32, plain export"]
    assert plain["vs_plain_ort"] == 1.0 and plain["min_cos_video_vs_plain"] > 0.99999
    for r in rows.values():
        assert r["frames_per_s"] > 0 and r["e2e_videos_per_s"] > 0
        assert r["vs_eager"] == pytest.approx(r["frames_per_s"] / rows["eager PyTorch fp32"]["frames_per_s"])
    for name in ("ORT fp32 + fused attention", "int8 dynamic", "int8 dynamic + fused attention"):
        assert rows[name]["min_cos_video_vs_plain"] > 0.99 and rows[name]["quality"]["top1_agreement_t2v"] >= 90
    merged = rows["int8 dynamic + token merge 2"]
    assert merged["gflops_per_frame"] < plain["gflops_per_frame"]  # 17 tokens -> 9 over 4 blocks
    assert set(out["matmul_ceiling_gflop_s"]) == {"fp32", "int8 (u8 x s8)"}
    assert (tmp_path / "speed.json").is_file() and (tmp_path / "speed.png").stat().st_size > 1000
    assert "| int8 dynamic + token merge 2 |" in (tmp_path / "speed.md").read_text()
