"""tests/gpu/session.sh on the CPU: its dry run assembles the carry (the kernels library for sm_90,
the wheels), sizes it against the 64 MiB a device call may carry, and collects every test the
session runs with CuPy and nvcc unimportable; an oversized carry fails it; a device mode run here
fails loudly, as does a spent time budget. About 15 s in all, most of it collecting the suite and
running the kernel tests' collection inside the session."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import kernel_bindings as kb
import pytest

SESSION = kb.ROOT / "tests" / "gpu" / "session.sh"


def wheels() -> list[str]:
    """The wheel files session.sh carries (its WHEELS array)."""
    block = re.search(r"^WHEELS=\(([^)]*)\)", SESSION.read_text(), re.M)
    assert block, "WHEELS=(...) not found in session.sh"
    return block.group(1).split()


def run_session(mode: str, tmp_path: Path, library: Path, **env: str) -> subprocess.CompletedProcess:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir(exist_ok=True)
    for name in wheels():
        (wheel_dir / name).write_bytes(b"stand-in")  # only sizes are read
    environ = {**os.environ, "OUT": str(tmp_path / "out"), "VLRT_KERNELS_LIB": str(library),
               "VLRT_CARRY_DIR": str(tmp_path / "carry"), "VLRT_WHEEL_DIR": str(wheel_dir),
               "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SESSION), mode], cwd=kb.ROOT, env=environ, capture_output=True, text=True,
                          timeout=300)


def test_dry_run_assembles_the_carry_and_collects_without_cupy_or_nvcc(kernels_build, tmp_path):
    result = run_session("dry-run", tmp_path, kernels_build.library)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "has device code for sm_90" in out
    assert "MISSING" not in out and "FAILED" not in out
    total = re.search(r"([\d.]+) MiB  total, limit 64 MiB", out)
    assert total and float(total.group(1)) <= 64, out
    assert (tmp_path / "carry" / "libvlrt_kernels.so").is_file()
    collected = re.search(r"kernel-tests (\d+) \(cuda-marked\), gpu-tests (\d+)", out)
    assert collected and int(collected.group(1)) > 0 and int(collected.group(2)) > 0, out
    assert "bash tests/gpu/session.sh tests" in out and "-m cuda tests/kernels" in out
    assert (tmp_path / "out" / "summary.txt").read_text().strip().endswith(f"logs in {tmp_path / 'out'})")


def test_an_oversized_carry_fails(kernels_build, tmp_path):
    result = run_session("carry", tmp_path, kernels_build.library, VLRT_CARRY_LIMIT_BYTES=str(1 << 20))
    assert result.returncode == 1
    assert "carry: FAILED" in result.stdout and "SESSION FAILED: carry size" in result.stderr


def test_unknown_mode_is_refused(tmp_path):
    result = subprocess.run(["bash", str(SESSION), "everything"], cwd=kb.ROOT, capture_output=True, text=True,
                            env={**os.environ, "OUT": str(tmp_path)})
    assert result.returncode == 2 and "usage" in result.stderr


def test_wheels_are_the_ones_docs_gpu_names():
    docs = (kb.ROOT / "docs" / "gpu.md").read_text()
    for name in wheels():
        assert name in docs, name


def test_tensorrt_checks_are_guarded():
    text = SESSION.read_text()
    body = text[text.index("trt_inspect() {"):]
    body = body[: body.index("\n}\n")]
    assert '-c "import tensorrt"' in body and "return 0" in body  # skipped where tensorrt is missing
    assert "-m tensorrt tests/runtime/test_trt.py" in body
    assert "-m vlrt.runtime.backends.trt.inspect --build-default" in body
    assert "run_step trt-inspect" in text


def test_a_device_mode_fails_loudly_without_a_gpu(kernels_build, tmp_path):
    """`session.sh kernels` here: VLRT_REQUIRE_GPU=1 makes the cuda tests fail instead of skip, and
    the benchmark cannot start; the session names both steps, exits 1, and leaves logs, JUnit XML and
    the summary under $OUT."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the session's kernel steps would pass")
    result = run_session("kernels", tmp_path, kernels_build.library, VLRT_SESSION_BUDGET_S="150")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SESSION FAILED: kernel-tests kernel-bench" in result.stderr
    out = tmp_path / "out"
    assert {"tests-kernels.txt", "tests-kernels.xml", "kernels-bench.txt", "summary.txt"} <= {
        f.name for f in out.iterdir()}
    assert "VLRT_REQUIRE_GPU=1" in (out / "tests-kernels.txt").read_text()
    assert "kernel-tests: failed (exit 1" in (out / "summary.txt").read_text()


def test_a_spent_budget_is_a_failure(kernels_build, tmp_path):
    result = run_session("kernels", tmp_path, kernels_build.library, VLRT_SESSION_BUDGET_S="20")
    assert result.returncode == 1
    assert "kernel-tests: NOT RUN, the 20 s budget is spent" in result.stdout
