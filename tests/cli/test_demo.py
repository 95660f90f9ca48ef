"""The reduced demo that CI runs: the shipped model, end to end, equal to the recorded figures."""
import json
import subprocess
import sys

from vlrt.cli import demo
from vlrt.cli.main import main


def test_reduced_demo_matches_recorded_figures(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlrt", "demo", "--videos", "40", "--json", "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["videos"] == 40 and out["validation_min_cosine"] >= 0.99999
    q, single = out["quality"], out["single_frame_baseline"]
    assert q["t2v_R@1"] >= 10 * 100 / 40  # at least 10x chance on held-out captions
    # The temporal part matters: one frame cannot tell direction or speed, the model can.
    assert q["motion_t2v_R@1"] >= single["motion_t2v_R@1"] + 20
    assert q["direction_probe_acc"] > single["direction_probe_acc"] and q["speed_probe_acc"] > single["speed_probe_acc"]
    engine = out["default_engine"]  # the engine `vlrt build` makes by default, here int8 dynamic
    assert engine["engine"] == "ort-cpu int8 dynamic" and engine["min_video_cosine"] >= 0.99
    assert engine["top1_agreement_t2v"] >= 95
    assert out["matches_recorded"] is True, q
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 40


def test_figures_that_differ_from_the_record_fail_the_demo(tmp_path, monkeypatch, capsys):
    recorded = {"t2v_R@1": 0.0}
    monkeypatch.setattr(demo, "recorded", lambda n: recorded)
    assert main(["demo", "--videos", "4", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "fp32 figures differ from those recorded" in err and "(recorded 0.0)" in err
