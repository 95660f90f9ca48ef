"""The CLI's edges: a bad flag shows the subcommand's usage, an empty query is refused, --json
errors are JSON on stdout, commands that encode name their engine, and a long command says what
it is doing on a terminal from the start."""
import json
import sys

import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip
from cli_support import vlrt
from video_assets import write_video

from vlrt.cli.main import main
from vlrt.export import export_checkpoint

FP32_LINE = "the bundle's fp32 graphs (ort-cpu)"



@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """(bundle, index, text output of the embed run)."""
    root = tmp_path_factory.mktemp("edges")
    export_checkpoint(write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf"),
                      root / "b", max_frames=4)
    write_video(root / "v.mp4", frames=24)
    res = vlrt("embed", root / "b", root / "v.mp4", "-o", root / "idx", "--backend", "ort-cpu")
    assert res.returncode == 0, res.stderr
    return root / "b", root / "idx", res.stdout


@pytest.mark.parametrize("command", [["search", "IDX", "a dog", "--bogus"], ["embed", "B", "v.mp4", "-o", "x", "--nope", "1"]])
def test_bad_flag_prints_the_subcommand_usage(command):
    res = vlrt(*command)
    assert res.returncode == 2
    assert res.stderr.startswith(f"usage: vlrt {command[0]} ")
    assert f"vlrt {command[0]}: error: unrecognized arguments: {command[-1] if command[0] == 'search' else '--nope 1'}" \
        in res.stderr


def test_argument_error_in_json_mode_is_json_on_stdout():
    res = vlrt("search", "IDX", "a dog", "-k", "many", "--json")
    assert res.returncode == 2 and res.stderr.startswith("usage: vlrt search ")
    assert json.loads(res.stdout) == {"error": "argument -k: invalid int value: 'many'"}


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_refused(indexed, query):
    _, index, _ = indexed
    res = vlrt("search", index, query)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == "vlrt: error: the query is empty: give the text to search for\n"
    res = vlrt("search", index, query, "--json")
    assert res.returncode == 1 and json.loads(res.stdout) == {"error": "the query is empty: give the text to search for"}


def test_errors_in_json_mode(tmp_path):
    res = vlrt("search", tmp_path, "a dog", "--json")
    assert res.returncode == 1
    error = json.loads(res.stdout)["error"]
    assert error == f"{tmp_path}: not a vlrt index (no index.json); make one with `vlrt embed`"
    assert res.stderr == f"vlrt: error: {error}\n"


def test_all_failing_embed_in_json_mode_is_one_json_document(indexed, tmp_path):
    bundle, _, _ = indexed
    res = vlrt("embed", bundle, tmp_path / "missing.mp4", "-o", tmp_path / "idx", "--json")
    assert res.returncode == 1
    out = json.loads(res.stdout)  # one document: the error, with the summary
    assert out["error"] == f"every one of 1 files failed; first: {tmp_path / 'missing.mp4'}: no such file"
    assert out["failed"] == [{"path": str(tmp_path / "missing.mp4"), "error": f"{tmp_path / 'missing.mp4'}: no such file"}]


def test_commands_that_encode_name_their_engine(indexed):
    _, index, embed_out = indexed
    assert f"  encoded with {FP32_LINE}\n" in embed_out
    res = vlrt("search", index, "a dog", "--backend", "ort-cpu")
    assert res.returncode == 0 and res.stdout.splitlines()[0] == f"query encoded with {FP32_LINE}"
    out = json.loads(vlrt("search", index, "a dog", "--backend", "ort-cpu", "--json").stdout)
    assert {k: out["engine"][k] for k in ("backend", "precision", "engine")} == \
        {"backend": "ort-cpu", "precision": "fp32", "engine": None}


def test_a_long_command_says_what_it_does_on_a_terminal(indexed, tmp_path, capsys, monkeypatch):
    bundle, _, _ = indexed
    write_video(tmp_path / "w.mp4", frames=12)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["embed", str(bundle), str(tmp_path / "w.mp4"), "-o", str(tmp_path / "idx"), "--backend", "ort-cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(f"s] loading bundle {bundle} ...")
    assert err[1].endswith(f"s] encoding with {FP32_LINE}; finding files ...")
    assert "1/1 videos" in err[-1]
