"""A deployment box has no torch: every module of the runtime, build, families, bench, CLI, serve
and triton packages imports (Triton's Python-backend model files import Triton's own module and
run inside tritonserver only), an engine is built and the runtime encodes, with torch made
unimportable."""
import pkgutil
import subprocess
import sys
import textwrap

from checkpoint_writers import TINY_C4C, write_clip4clip

import vlrt.bench
import vlrt.build
import vlrt.cli
import vlrt.families
import vlrt.runtime
import vlrt.serve
import vlrt.triton
from vlrt.export import export_checkpoint

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" or name.startswith(("torch.", "vlrt.export", "vlrt.models")):
                raise ModuleNotFoundError(f"{name} is blocked: the runtime must not import it", name=name)
    sys.meta_path.insert(0, NoTorch())
""")


TORCH_FREE = (vlrt.runtime, vlrt.build, vlrt.families, vlrt.bench, vlrt.cli, vlrt.serve, vlrt.triton)
IN_TRITON_ONLY = "vlrt.triton.models."


def torch_free_modules():
    return sorted(m.name for pkg in TORCH_FREE for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
                  if not m.name.startswith(IN_TRITON_ONLY))


def test_deployment_modules_import_without_torch():
    modules = torch_free_modules()
    for name in ("vlrt.runtime.tokenizer", "vlrt.runtime.backends.ort.runner", "vlrt.build.engine",
                 "vlrt.build.passes.int8", "vlrt.families.clip", "vlrt.families.drl", "vlrt.bench.quality", "vlrt.cli.demo", "vlrt.serve.app",
                 "vlrt.triton.repository"):
        assert name in modules
    code = BLOCK_TORCH + "\n".join(f"import {m}" for m in ["vlrt", "vlrt.assets", "vlrt.constants", *modules])
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_and_encode_without_torch(tmp_path):
    export_checkpoint(write_clip4clip(tmp_path / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf"),
                      tmp_path / "b", max_frames=3)
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np, vlrt
        from vlrt.build import build_engine
        built = build_engine({str(tmp_path / 'b')!r}, backend="ort-cpu", precision="int8")
        assert built.manifest["validation"]["gate"] == "passed"
        rt = vlrt.Runtime.load({str(tmp_path / 'b')!r}, precision="int8")
        assert rt.engine.key == built.key
        v = rt.encode_frames(np.zeros((2, 3, 3, 32, 32), np.float32))
        t = rt.encode_text(["a dog"])
        assert v.shape == (2, {TINY_C4C.embed_dim}) and t.shape == (1, {TINY_C4C.embed_dim})
        assert "torch" not in sys.modules and not any(m.startswith("vlrt.export") for m in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


BLOCK_ONNX = BLOCK_TORCH.replace('name == "torch"', 'name in ("torch", "onnx")')


def test_missing_extras_are_named_in_one_line(tmp_path):
    """Without the build extra (onnx) `vlrt build` names it, and without torch `vlrt export` names
    its extra; neither prints a traceback."""
    code = BLOCK_ONNX + textwrap.dedent("""
        from vlrt.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """)
    for argv, extra in ((["build", str(tmp_path)], "vlrt[build]"), (["export", "x.pt", "-o", str(tmp_path / "b")],
                                                                    "vlrt[export]")):
        res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1 and f"pip install '{extra}'" in res.stderr
        assert "is missing" in res.stderr and "(None" not in res.stderr
