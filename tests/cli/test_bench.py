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
