"""The runtime works on a box without torch: import every runtime module and encode with torch
made unimportable."""
import pkgutil
import subprocess
import sys
import textwrap

import vlrt.runtime
from checkpoint_writers import TINY_C4C, write_clip4clip

from vlrt.export import export_checkpoint

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" or name.startswith(("torch.", "vlrt.export", "vlrt.models")):
                raise ImportError(f"{name} is blocked: the runtime must not import it")
    sys.meta_path.insert(0, NoTorch())
""")


def runtime_modules():
    return sorted(m.name for m in pkgutil.walk_packages(vlrt.runtime.__path__, "vlrt.runtime."))


def test_runtime_modules_import_without_torch():
    modules = runtime_modules()
    assert "vlrt.runtime.tokenizer" in modules and "vlrt.runtime.backends.ort.runner" in modules
    code = BLOCK_TORCH + "\n".join(f"import {m}" for m in ["vlrt", *modules])
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_encodes_without_torch(tmp_path):
    export_checkpoint(write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf"),
                      tmp_path / "b", max_frames=3)
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np, vlrt
        rt = vlrt.Runtime.load({str(tmp_path / 'b')!r})
        v = rt.encode_frames(np.zeros((2, 3, 3, 32, 32), np.float32))
        t = rt.encode_text(["a dog"])
        assert v.shape == (2, {TINY_C4C.embed_dim}) and t.shape == (1, {TINY_C4C.embed_dim})
        assert "torch" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
