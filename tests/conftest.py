import sys
from pathlib import Path

# Make test-support modules in tests/ (e.g. checkpoint_writers) importable from every test package.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
