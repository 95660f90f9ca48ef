"""`vlrt build --auto`: every candidate built and timed here, the fastest that holds the gates
recorded per machine, and `Runtime.load` using it when nothing else is named."""
import json
import shutil

import pytest
from cli_support import vlrt
from video_assets import write_video

from vlrt import Runtime
from vlrt.build import auto
from vlrt.build.auto import build_auto
from vlrt.errors import VlrtError
from vlrt.runtime import backends
from vlrt.runtime.bundle import AUTO_FILE, ENGINES, machine_fingerprint


def ov_native_bf16() -> bool:
    from vlrt.runtime.backends.ov import native_bf16

    return native_bf16(machine_fingerprint())


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auto-calib")
    for i in range(3):
        write_video(folder / f"clip{i}.mp4", width=96 + 16 * i, height=64, frames=48, fps=24)
    return folder


@pytest.fixture(scope="module")
def built(tiny_bundle, calib, tmp_path_factory):
    copy = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("auto") / "b", ignore=shutil.ignore_patterns(ENGINES))
    gallery = ([str(p) for p in sorted(calib.iterdir())], ["a red circle", "a blue square", "a green star"])
    return copy, build_auto(copy, calib=calib, gallery=gallery, rounds=2, threads=1)


def test_every_cpu_candidate_is_tried_and_the_fastest_passing_is_chosen(built):
    _, entry = built
    by_name = {c["name"]: c for c in entry["candidates"]}
    for name in ("ort-cpu fp32", "ort-cpu fp32 + fused attention", "ort-cpu int8 dynamic",
                 "ort-cpu int8 dynamic + fused attention", "ort-cpu int8 static"):
        assert by_name[name]["status"] in ("passed", "chosen"), by_name[name]
        assert by_name[name]["frames_per_s"] > 0 and by_name[name]["timing_min_cosine"] >= 0.99
        assert set(by_name[name]["recall"]) == {"t2v_R@1", "v2t_R@1"}
    assert by_name["ort-cpu fp32"]["key"] is None and by_name["ort-cpu int8 dynamic"]["key"]
    timed = [c for c in entry["candidates"] if c["status"] in ("passed", "chosen")]
    chosen = max(timed, key=lambda c: c["frames_per_s"])
    assert chosen["status"] == "chosen" and entry["choice"]["name"] == chosen["name"]
    assert entry["measure"]["source"] == "calibration videos" and entry["measure"]["gallery_videos"] == 3
    if "openvino" in backends.names():
        assert any(c["backend"] == "openvino" for c in entry["candidates"])
        fallback = by_name["openvino int8 static + bf16 fallback"]
        assert fallback["settings"]["int8_fallback"] == "bf16"
        if not backends.get("openvino").available():
            assert fallback["status"].startswith("not installed")
        elif ov_native_bf16():
            assert fallback["key"] not in (None, by_name["openvino int8 static"]["key"])
            assert fallback["validation_min_cosine"] >= 0.99
        else:
            assert fallback["status"].startswith("refused: --int8-fallback bf16 needs a CPU with native bf16")


def test_load_uses_this_machines_choice(built):
    bundle, entry = built
    choice = entry["choice"]
    for rt in (Runtime.load(bundle), Runtime.load(bundle, engine="auto")):
        assert (rt.backend, rt.engine_info["engine"]) == (choice["backend"], choice["key"])
    plain = Runtime.load(bundle, precision="fp32")  # named: not the auto choice
    assert plain.engine is None and plain.backend == "ort-cpu"


def test_another_machines_choice_is_not_used(built, tmp_path):
    bundle, _ = built
    copy = shutil.copytree(bundle, tmp_path / "b")
    path = copy / ENGINES / AUTO_FILE
    data = json.loads(path.read_text())
    data["entries"][0]["machine"] = {**data["entries"][0]["machine"], "cpu": "another CPU"}
    path.write_text(json.dumps(data))
    assert Runtime.load(copy).engine is None  # the plain default
    with pytest.raises(VlrtError, match="no `vlrt build --auto` choice for this machine"):
        Runtime.load(copy, engine="auto")


def test_the_recall_gate_refuses(built, calib, monkeypatch):
    bundle, _ = built
    monkeypatch.setattr(auto, "RECALL_BUDGET", -1e-9)  # any drop, even none, is too much
    gallery = ([str(p) for p in sorted(calib.iterdir())], ["one", "two", "three"])
    with pytest.raises(VlrtError, match="no candidate passed the quality gate.*Recall@1 0.00 points below"):
        build_auto(bundle, gallery=gallery, rounds=1, only=["ort-cpu"])


def test_static_needs_calibration_and_a_named_backend_limits_the_candidates(built):
    bundle, _ = built
    entry = build_auto(bundle, rounds=1, only=["ort-cpu"])
    by_name = {c["name"]: c for c in entry["candidates"]}
    assert by_name["ort-cpu int8 static"]["status"] == "needs calibration videos (--calib DIR)"
    assert {c["backend"] for c in entry["candidates"]} == {"ort-cpu"}
    assert entry["measure"]["source"] == "random pixels"


def test_cli(built, calib, tmp_path):
    bundle, _ = built
    tsv = calib / "gallery.tsv"
    tsv.write_text("file\tcaption\n" + "".join(f"{p.name}\tclip {i}\n" for i, p in enumerate(sorted(calib.glob("*.mp4")))))
    res = vlrt("build", str(bundle), "--auto", "--backend", "ort-cpu", "--gallery", str(tsv), "--rounds", "1")
    assert res.returncode == 0, res.stderr
    assert "chosen: ort-cpu" in res.stdout and "ort-cpu int8 dynamic" in res.stdout
    res = vlrt("build", str(bundle), "--auto", "--precision", "int8")
    assert res.returncode == 1 and "--auto tries them all" in res.stderr
    res = vlrt("build", str(bundle), "--gallery", str(tsv))
    assert res.returncode == 1 and "apply to --auto" in res.stderr
