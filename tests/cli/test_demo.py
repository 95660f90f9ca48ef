"""The reduced demo that CI runs: the shipped model, end to end, equal to the recorded figures."""
import json
import subprocess
import sys


def test_reduced_demo_matches_recorded_figures(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlrt", "demo", "--videos", "40", "--json", "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["videos"] == 40 and out["validation_min_cosine"] >= 0.99999
    q = out["quality"]
    assert q["t2v_R@1"] >= 10 * 100 / 40  # at least 10x chance on held-out captions
    assert out["matches_recorded"] is True, q
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 40
