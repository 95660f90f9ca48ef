"""Running the real `vlrt` entry point from tests, as a user's shell would."""
import subprocess
import sys


def vlrt(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrt", *map(str, args)], capture_output=True, text=True, **kw)
