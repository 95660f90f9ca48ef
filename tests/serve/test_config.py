"""Serve settings: flags over VLRT_* variables over defaults, and refusals with a reason."""
import pytest

from vlrt.errors import VlrtError
from vlrt.serve.config import ServeConfig


def test_flags_win_over_environment_over_defaults(tmp_path):
    env = {"VLRT_PORT": "9001", "VLRT_API_KEY": "secret-key-1", "VLRT_VIDEO_WAIT_MS": "12.5",
           "VLRT_WRITABLE": "true", "VLRT_INDEX": str(tmp_path), "VLRT_HOST": ""}
    c = ServeConfig.from_env(env, port=9002, bundle="b")
    assert c.port == 9002 and c.api_key == "secret-key-1" and c.video_wait_ms == 12.5 and c.writable is True
    assert c.host == "127.0.0.1"  # an empty variable is not a setting
    assert c.public()["api_key"] == "set"


@pytest.mark.parametrize("env, message", [
    ({"VLRT_PORT": "eighty"}, "VLRT_PORT='eighty'"),
    ({"VLRT_WRITABLE": "maybe"}, "VLRT_WRITABLE"),
    ({"VLRT_API_KEY": "short"}, "at least 8"),
    ({"VLRT_VIDEO_BATCH": "0"}, "video-batch must be >= 1"),
])
def test_bad_settings_are_refused(env, message):
    with pytest.raises(VlrtError, match=message):
        ServeConfig.from_env(env, bundle="b")


def test_needs_something_to_serve_and_an_index_to_write(tmp_path):
    with pytest.raises(VlrtError, match="needs a bundle"):
        ServeConfig.from_env({})
    with pytest.raises(VlrtError, match="--writable needs --index"):
        ServeConfig.from_env({}, bundle="b", writable=True)
    with pytest.raises(VlrtError, match="not a directory"):
        ServeConfig.from_env({}, bundle="b", media_root=str(tmp_path / "missing"))
