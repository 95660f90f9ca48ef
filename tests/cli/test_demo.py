"""The reduced demo that CI runs: the shipped bundle, end to end, equal to the recorded figures;
and the shipped bundle is what `vlrt export` makes of the shipped checkpoint."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vlrt
import vlrt.assets
from vlrt.build.validate import manifest_feed_sets
from vlrt.cli.main import main
from vlrt.export import export_checkpoint
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.bundle import Bundle


def test_reduced_demo_matches_recorded_figures(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlrt", "demo", "--videos", "40", "--json", "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["videos"] == 40 and out["validation_min_cosine"] >= 0.99999 and out["bundle_source"] == "shipped bundle"
    q, single = out["quality"], out["single_frame_baseline"]
    assert q["t2v_R@1"] >= 10 * 100 / 40  # at least 10x chance on held-out captions
    # The temporal part matters: one frame cannot tell direction or speed, the model can.
    assert q["motion_t2v_R@1"] >= single["motion_t2v_R@1"] + 20
    assert q["direction_probe_acc"] > single["direction_probe_acc"] and q["speed_probe_acc"] > single["speed_probe_acc"]
    engine = out["default_engine"]  # this machine's `vlrt build --auto` choice
    entry = json.loads((tmp_path / "bundle" / "engines" / "auto.json").read_text())["entries"][0]
    assert (engine["name"], engine["key"]) == (entry["choice"]["name"], entry["choice"]["key"])
    assert {"ort-cpu fp32", "ort-cpu int8 dynamic", "ort-cpu int8 static"} <= {c["name"] for c in engine["candidates"]}
    assert entry["measure"]["gallery_videos"] == 40
    assert engine["min_video_cosine"] >= 0.99 and engine["top1_agreement_t2v"] >= 95
    assert out["matches_recorded"] is True, q
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 40
    check_left_behind(tmp_path, engine)


def check_left_behind(root: Path, engine: dict) -> None:
    """captions.tsv names every clip; the index searches with the engine's text graph and gives the
    engine's text->video R@1."""
    rows = [line.split("\t") for line in (root / "captions.tsv").read_text().splitlines()]
    assert rows[0] == ["file", "caption", "split"] and len(rows) == 41
    assert {r[0] for r in rows[1:]} == {p.name for p in (root / "videos").glob("*.mp4")}
    assert {r[2] for r in rows[1:]} == {"test"}
    if engine["key"]:
        assert (root / "bundle" / "engines" / engine["key"] / "engine.json").is_file()
    index = vlrt.Index.open(root / "index")
    assert len(index) == 40 and index.runtime().engine_info["engine"] == engine["key"]
    top1 = [Path(index.search(caption, k=1)[0][0]).name == name for name, caption, _ in rows[1:]]
    assert round(100 * float(np.mean(top1)), 2) == engine["quality"]["t2v_R@1"]


def test_reduced_xclip_demo_matches_recorded_figures(tmp_path):
    """The multi-grained sibling: every caption scored against every clip by its scorer."""
    res = subprocess.run([sys.executable, "-m", "vlrt", "demo", "--model", "xclip", "--videos", "40", "--json",
                          "-o", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    q = out["quality"]
    assert out["videos"] == 40 and out["validation_min_cosine"] >= 0.99999 and "single_frame_baseline" not in out
    assert q["t2v_R@1"] >= 10 * 100 / 40 and out["default_engine"] is None
    assert out["matches_recorded"] is True, q
    index = vlrt.Index.open(tmp_path / "index")  # searched with the scorer, as the demo scored
    rows = [line.split("\t") for line in (tmp_path / "captions.tsv").read_text().splitlines()[1:]]
    top1 = [Path(index.search(caption, k=1)[0][0]).name == name for name, caption, _ in rows]
    assert round(100 * float(np.mean(top1)), 2) == q["t2v_R@1"]


@pytest.mark.parametrize("model", ["default", "xclip"])
def test_shipped_bundle_is_the_export_of_the_shipped_checkpoint(tmp_path, model):
    shipped = Bundle.open(vlrt.assets.unpack_default_bundle(tmp_path / "shipped", model))
    fresh = Bundle.open(export_checkpoint(vlrt.assets.default_checkpoint(model), tmp_path / "fresh").bundle)
    volatile = ("created", "versions", "files", "source", "validation")
    assert {k: v for k, v in shipped.manifest.items() if k not in volatile} == \
           {k: v for k, v in fresh.manifest.items() if k not in volatile}
    for feeds in manifest_feed_sets(fresh.manifest):
        for graph in ("video", "text"):
            with OrtRunner(SessionFromOnnx(shipped.graph_path(graph))) as a, \
                 OrtRunner(SessionFromOnnx(fresh.graph_path(graph))) as b:
                got, want = a.infer(feeds[graph]), b.infer(feeds[graph])
            for name, value in want.items():
                np.testing.assert_allclose(got[name], value, atol=1e-5)
    if "scorer" in fresh.manifest:  # the sibling's scorer graph scores alike too
        spec, rng = fresh.manifest["scorer"], np.random.default_rng(0)
        sizes = {"queries": 2, "videos": 3, "words": fresh.max_words, "frames": fresh.max_frames}
        feeds = {k: rng.standard_normal([sizes.get(d, d) for d in axes]).astype(np.float32)
                 for k, axes in {**spec["text_inputs"], **spec["video_inputs"]}.items()}
        with OrtRunner(SessionFromOnnx(shipped.path(spec["file"]))) as a, \
             OrtRunner(SessionFromOnnx(fresh.path(spec["file"]))) as b:
            np.testing.assert_allclose(a.infer(feeds)["scores"], b.infer(feeds)["scores"], atol=1e-5)


def test_damaged_shipped_bundle_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / vlrt.assets.BUNDLE_ARCHIVE
    archive.write_bytes(vlrt.assets.default_checkpoint().with_name(vlrt.assets.BUNDLE_ARCHIVE).read_bytes()[:-10])
    (tmp_path / vlrt.assets.BUNDLE_SHA256).write_text(
        vlrt.assets.default_checkpoint().with_name(vlrt.assets.BUNDLE_SHA256).read_text())
    monkeypatch.setattr(vlrt.assets, "_asset", lambda name: tmp_path / name)
    with pytest.raises(vlrt.VlrtError, match=r"is not the recorded .*reinstall vlrt"):
        vlrt.assets.unpack_default_bundle(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_figures_that_differ_from_the_record_fail_the_demo(tmp_path, monkeypatch, capsys):
    recorded = {"t2v_R@1": 0.0}
    monkeypatch.setattr(vlrt.assets, "recorded_figures", lambda n, model="default": recorded)
    assert main(["demo", "--videos", "4", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "fp32 figures differ from those recorded" in err and "(recorded 0.0)" in err
    assert main(["demo", "--videos", "4", "-o", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)  # one document: the figures and the error
    assert "(recorded 0.0)" in out["error"] and out["matches_recorded"] is False and out["videos"] == 4


@pytest.mark.parametrize("n", ["0", "-3", "x"])
def test_demo_needs_at_least_one_clip(n, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--videos", n])
    assert exit_.value.code == 2 and "usage: vlrt demo" in capsys.readouterr().err


def test_demo_from_checkpoint_exports_again(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vlrt", "demo", "--videos", "4", "--from-checkpoint", "--json",
                          "-o", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["bundle_source"] == "checkpoint, exported now" and out["validation_min_cosine"] >= 0.99999
    assert json.loads((tmp_path / "bundle" / "vlrt.json").read_text())["source"]["path"].endswith("default_model.pt.gz")


def test_demo_output_can_be_reused_and_is_never_clobbered(tmp_path, capsys):
    assert main(["demo", "--videos", "4", "-o", str(tmp_path), "--json"]) == 0
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    meta["bundle_manifest_sha256"] = "0" * 64  # as if an older vlrt's bundle had made it
    (tmp_path / "index" / "index.json").write_text(json.dumps(meta))
    assert main(["demo", "--videos", "4", "-o", str(tmp_path), "--json"]) == 0  # the demo's index is made anew
    assert len(vlrt.Index.open(tmp_path / "index")) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "index").rename(tmp_path / "kept")
    (tmp_path / "other").rename(tmp_path / "index")
    capsys.readouterr()
    assert main(["demo", "--videos", "4", "-o", str(tmp_path)]) == 1
    assert "is not a vlrt index; refusing to replace it" in capsys.readouterr().err
    assert (tmp_path / "index" / "notes.txt").read_text() == "mine"
