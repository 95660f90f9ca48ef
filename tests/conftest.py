import sys
from pathlib import Path

import pytest

# Make test-support modules in tests/ (e.g. checkpoint_writers) importable from every test package.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny random-weight CLIP4Clip (seqTransf) exported with 4 frames: shared, never modified."""
    from checkpoint_writers import TINY_C4C, write_clip4clip

    from vlrt.export import export_checkpoint

    root = tmp_path_factory.mktemp("tiny-bundle")
    export_checkpoint(write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf"),
                      root / "b", max_frames=4)
    return root / "b"


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
    """vlrt's caches (the cut video graphs of packed frames) go to the test run's own folder."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("XDG_CACHE_HOME", str(path))
        yield path
