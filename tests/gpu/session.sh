#!/usr/bin/env bash
# What a GPU session runs on the device machine (docs/gpu.md, "What a GPU session must do"), from
# the repository root, and its rehearsal here:
#
#   bash tests/gpu/session.sh dry-run   # here, on the CPU: assemble the carry, check its size and that
#                                       # every GPU test collects without CuPy and nvcc, print the plan
#   bash tests/gpu/session.sh carry     # the dry run's first part: assemble and size the carry
#   bash tests/gpu/session.sh tests     # device call 1: environment, kernels, tests/gpu, other cuda tests
#   bash tests/gpu/session.sh kernels   # the kernels' part of `tests` alone (tests and speed)
#   bash tests/gpu/session.sh bench     # device call 2: benchmarks/gpu.py -> results JSON + md
#   bash tests/gpu/session.sh all       # tests, then bench with whatever time is left
#
# A device command may run 10 minutes, so every step runs under `timeout`, within one budget for
# the whole call (VLRT_SESSION_BUDGET_S, default 540 s); a step that runs out is a failure. Logs,
# JUnit XML and figures go under $OUT (default out/gpu-session), with summary.txt last. The exit
# status is non-zero only when a step failed: a test failed or errored, a step crashed or ran out
# of time; skipped optional steps (no tensorrt, no cuda tests elsewhere) are not failures.
#
# Carried from here (docs/gpu.md): the working tree, the wheels in $VLRT_WHEEL_DIR (default .whl)
# and $VLRT_CARRY_DIR (default build/gpu-session) holding libvlrt_kernels.so for sm_90, since the
# device has no nvcc. The device has no CuPy either: the kernel tests use torch tensors.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
what=${1:-all}
OUT=${OUT:-out/gpu-session}
WHEEL_DIR=${VLRT_WHEEL_DIR:-.whl}
CARRY_DIR=${VLRT_CARRY_DIR:-build/gpu-session}
ARCH=${VLRT_SESSION_ARCH:-90}
BUDGET=${VLRT_SESSION_BUDGET_S:-540}
CARRY_LIMIT=${VLRT_CARRY_LIMIT_BYTES:-$((64 * 1024 * 1024))}  # one device call's carry: working tree and carried paths
# The wheels the device image lacks (docs/gpu.md lists how they were fetched).
WHEELS=(av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl ftfy-6.3.1-py3-none-any.whl
        wcwidth-0.9.4-cp310-abi3-manylinux2014_x86_64.whl)
PY=${PYTHON:-python3}
START=$SECONDS
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LIB=${VLRT_KERNELS_LIB:-$ROOT/$CARRY_DIR/libvlrt_kernels.so}
[[ $CARRY_DIR == /* ]] && LIB=${VLRT_KERNELS_LIB:-$CARRY_DIR/libvlrt_kernels.so}
failed=()
: > "$OUT/summary.txt"

say() { echo "$*" | tee -a "$OUT/summary.txt"; }

# run_step NAME CAP LOG OK_CODES CMD...: CMD under timeout, at most CAP seconds and never past the
# budget, output to the terminal and $OUT/LOG; an exit code outside OK_CODES (e.g. "0" or "0 5")
# is a failure.
run_step() {
  local name=$1 cap=$2 log=$3 ok=$4
  shift 4
  local left=$((BUDGET - (SECONDS - START) - 10))
  ((left < cap)) && cap=$left
  if ((cap < 15)); then
    say "$name: NOT RUN, the ${BUDGET} s budget is spent"
    failed+=("$name (no time left)")
    return
  fi
  echo "=== $name (at most ${cap} s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  local verdict=failed
  [[ " $ok " == *" $rc "* ]] && verdict=ok
  ((rc == 124 || rc == 137)) && verdict="TIMED OUT after ${cap} s"
  say "$name: $verdict (exit $rc, $((SECONDS - t0)) s, log $log)"
  [[ $verdict == ok ]] || failed+=("$name")
}

environment() {
  nvidia-smi || echo "nvidia-smi failed"
  echo "--- driver video libraries (NVDEC needs libnvcuvid.so.1 and libcuda.so.1)"
  ldconfig -p | grep -E "libnvcuvid|libcuda\.so" || echo "NOT FOUND by ldconfig"
  ls /usr/local/nvidia/lib64 2>/dev/null | grep -E "nvcuvid|libcuda" || true
  "$PY" - <<'EOF'
import platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
try:
    import av, av.codec.hwaccel
    print("av", av.__version__, "ffmpeg", av.library_versions["libavcodec"],
          "hwdevices", av.codec.hwaccel.hwdevices_available())
except ImportError as err:
    print("PyAV not importable:", err)
EOF
  echo "--- kernels library: $LIB"
  "$PY" kernels/build.py inspect "$LIB" || true
  return 0  # a record, not a check: the tests that need each piece fail on their own
}

# Where the device image lacks PyAV, ftfy or wcwidth, install the carried wheels outside the tree.
setup_python() {
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import av, ftfy, wcwidth" 2>/dev/null; then
    local wheels=()
    for w in "${WHEELS[@]}"; do [[ -f $WHEEL_DIR/$w ]] && wheels+=("$WHEEL_DIR/$w"); done
    if ((${#wheels[@]})); then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/vlrt-site "${wheels[@]}" 2>&1 | tee "$OUT/setup.txt"
      export PYTHONPATH="/tmp/vlrt-site:$PYTHONPATH"
    else
      echo "no carried wheels in $WHEEL_DIR; PyAV, ftfy or wcwidth is missing" | tee "$OUT/setup.txt"
    fi
  fi
  # cuda-marked tests fail, not skip, when CUDA or the library is missing (tests/gpu, tests/kernels)
  export VLRT_REQUIRE_GPU=1 PYTHONUNBUFFERED=1 VLRT_KERNELS_LIB="$LIB"
}

trt_inspect() {
  if ! "$PY" -c "import tensorrt" 2>/dev/null; then
    echo "tensorrt is not importable here: the engine inspector check is skipped"
    return 0
  fi
  # The tensorrt-marked tests, then the embedded model's fp16 plans built, gated and inspected:
  # whether attention fused around the fp32 Softmax/LayerNorm of the strongly typed network.
  local rc=0
  VLRT_REQUIRE_TENSORRT=1 "$PY" -m pytest -p no:cacheprovider -q -rA -m tensorrt tests/runtime/test_trt.py || rc=1
  "$PY" -m vlrt.runtime.backends.trt.inspect --build-default /tmp/vlrt-trt || rc=1
  return $rc
}

export -f environment trt_inspect  # run by `timeout bash -c`, which sees exported functions
export PY LIB

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfEs --durations=15)
KERNEL_TESTS=(-m cuda tests/kernels)
GPU_TESTS=(tests/gpu)
OTHER_CUDA_TESTS=(-m cuda tests --ignore=tests/gpu --ignore=tests/kernels)

kernel_steps() {
  run_step kernel-tests 180 tests-kernels.txt "0" \
    "${PYTEST[@]}" --junitxml="$OUT/tests-kernels.xml" "${KERNEL_TESTS[@]}"
  run_step kernel-bench 60 kernels-bench.txt "0" \
    "$PY" tests/kernels/bench_kernels.py --lib "$LIB" --out "$OUT"
}

test_steps() {
  run_step environment 30 env.txt "0" bash -c environment
  kernel_steps
  run_step gpu-tests 330 tests-gpu.txt "0" "${PYTEST[@]}" --junitxml="$OUT/tests-gpu.xml" "${GPU_TESTS[@]}"
  # Other engineers' cuda-marked tests, if any exist; 5 means none was collected.
  run_step other-cuda-tests 90 tests-cuda-other.txt "0 5" \
    "${PYTEST[@]}" --junitxml="$OUT/tests-cuda-other.xml" "${OTHER_CUDA_TESTS[@]}"
  run_step trt-inspect 180 trt-inspect.txt "0" bash -c trt_inspect
}

bench_steps() {
  run_step bench 480 bench.txt "0" "$PY" benchmarks/gpu.py --workdir /tmp/vlrt-gpu-bench
  cp benchmarks/results/gpu-*.json benchmarks/results/gpu-*.md "$OUT/" 2>/dev/null
}

# ---- dry run: everything a session needs from here, on the CPU ----

# A pytest plugin that makes CuPy and NVIDIA's CUDA wheels (where nvcc lives) unimportable, and
# writes each collected test's id and whether it is cuda-marked to $VLRT_COLLECTED.
BLOCKER='import importlib.abc, json, os, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("cupy", "cupyx", "nvidia"):
            raise ImportError(f"{name}: the GPU machine has no CuPy and no nvcc")
        return None
sys.meta_path.insert(0, _Blocked())
def pytest_collection_finish(session):
    with open(os.environ["VLRT_COLLECTED"], "w") as f:
        json.dump([[i.nodeid, i.get_closest_marker("cuda") is not None] for i in session.items], f)'

# Collects all of tests/ once, as the device would (CuPy and nvcc out of reach, PATH without nvcc,
# the carried library named), then counts each selection the session runs; a collection error in
# any module fails, since one of the device's runs would import it.
collect_all() {
  local path="" dir dirs
  IFS=: read -ra dirs <<< "$PATH"
  for dir in "${dirs[@]}"; do [[ -x $dir/nvcc ]] || path+="${path:+:}$dir"; done
  local block_dir out rc
  block_dir=$(mktemp -d)
  echo "$BLOCKER" > "$block_dir/vlrt_block_gpu_tools.py"
  out=$(env -u VLRT_NVCC -u CUDACXX PATH="$path" PYTHONPATH="$block_dir:$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        VLRT_KERNELS_LIB="$LIB" VLRT_REQUIRE_GPU=1 VLRT_COLLECTED="$block_dir/collected.json" \
        "$PY" -m pytest -p no:cacheprovider -p vlrt_block_gpu_tools --collect-only -q tests 2>&1)
  rc=$?
  if [[ $rc != 0 ]]; then
    echo "$out" | tail -40
    say "collect: FAILED (pytest --collect-only tests exited $rc without CuPy and nvcc)"
    failed+=("collect")
  elif ! "$PY" - "$block_dir/collected.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
items = json.load(open(sys.argv[1]))
kernels = sum(cuda for i, cuda in items if i.startswith("tests/kernels/"))
gpu = sum(1 for i, _ in items if i.startswith("tests/gpu/"))
other = sum(cuda for i, cuda in items if not i.startswith(("tests/kernels/", "tests/gpu/")))
print(f"collect: without CuPy and nvcc, {len(items)} tests; kernel-tests {kernels} (cuda-marked), "
      f"gpu-tests {gpu}, other-cuda-tests {other}")
if not kernels or not gpu:
    print("collect: FAILED, the kernel or GPU selection is empty")
    sys.exit(1)
EOF
  then
    failed+=("collect")
  fi
  rm -rf "$block_dir"
}

carry() {
  say "carry: what a GPU session takes from here (nothing is run on a GPU)"
  # 1. the kernels library, for sm_$ARCH
  mkdir -p "$CARRY_DIR"
  local lib_out="$CARRY_DIR/libvlrt_kernels.so"
  if [[ -n ${VLRT_KERNELS_LIB:-} ]]; then
    [[ $VLRT_KERNELS_LIB -ef $lib_out ]] || cp "$VLRT_KERNELS_LIB" "$lib_out"
  elif ! "$PY" kernels/build.py lib --arch "$ARCH" --out "build/kernels-sm$ARCH" > "$OUT/build.txt" 2>&1; then
    cat "$OUT/build.txt"
    say "library: FAILED to build for sm_$ARCH here (kernels/build.py lib; see build.txt)"
    failed+=("library")
  else
    cp "build/kernels-sm$ARCH/libvlrt_kernels.so" "$lib_out"
  fi
  LIB=$(cd "$(dirname "$lib_out")" && pwd)/libvlrt_kernels.so
  if [[ ! -f $LIB ]]; then
    :  # said above
  elif "$PY" kernels/build.py inspect "$LIB" --arch "$ARCH" > "$OUT/library.txt" 2>&1; then
    say "library: $lib_out has device code for sm_$ARCH"
  else
    cat "$OUT/library.txt"
    say "library: FAILED, $lib_out has no code for sm_$ARCH"
    failed+=("library")
  fi
  # 2. the wheels, and 3. sizes: the working tree (tracked and untracked-unignored files) plus the
  # carried paths, against what one call may carry
  local missing=()
  for w in "${WHEELS[@]}"; do [[ -f $WHEEL_DIR/$w ]] || missing+=("$w"); done
  if ((${#missing[@]})); then
    say "wheels: MISSING from $WHEEL_DIR: ${missing[*]} (docs/gpu.md: pip download); tests/gpu needs them"
  fi
  if ! "$PY" - "$ROOT" "$CARRY_LIMIT" "$WHEEL_DIR" "$CARRY_DIR" <<'EOF' | tee -a "$OUT/summary.txt"
import os, subprocess, sys
from pathlib import Path
root, limit, carried = Path(sys.argv[1]), int(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
carried = [p if p.is_absolute() else root / p for p in carried]
inside = lambda f, d: d == f or d in f.parents
files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                       check=True).stdout.decode().split("\0")
tree = sum((root / f).stat().st_size for f in files if f and (root / f).is_file()
           and not any(inside(root / f, d) for d in carried))
rows, total = [("working tree (git ls-files -co --exclude-standard)", tree)], tree
for d in carried:
    for f in sorted(d.rglob("*")) if d.is_dir() else []:
        if f.is_file():
            rows.append((os.path.relpath(f, root), f.stat().st_size))
            total += f.stat().st_size
for name, size in rows:
    print(f"  {size / 2**20:9.2f} MiB  {name}")
print(f"  {total / 2**20:9.2f} MiB  total, limit {limit / 2**20:.0f} MiB")
rel = [os.path.relpath(d, root) for d in carried if d.is_dir()]
print("carry:", "[" + ", ".join(f'"{p}"' for p in rel) + "]")
if total > limit:
    print(f"carry: FAILED, {total} bytes is over the {limit}-byte limit")
    sys.exit(1)
EOF
  then
    failed+=("carry size")
  fi
}

dry_run() {
  carry
  # 4. every test selection the session runs collects without CuPy and nvcc
  collect_all
  # 5. what the device calls would run
  say "device call 1 (run: carry as above, timeout_s 600): bash tests/gpu/session.sh tests"
  say "device call 2 (same carry): bash tests/gpu/session.sh bench"
  say "session steps, each under timeout within ${BUDGET} s:"
  say "  environment: nvidia-smi, ldconfig, versions, kernels/build.py inspect \$VLRT_KERNELS_LIB"
  say "  kernel-tests: ${PYTEST[*]} --junitxml=\$OUT/tests-kernels.xml ${KERNEL_TESTS[*]}"
  say "  kernel-bench: $PY tests/kernels/bench_kernels.py --lib \$VLRT_KERNELS_LIB --out \$OUT"
  say "  gpu-tests: ${PYTEST[*]} --junitxml=\$OUT/tests-gpu.xml ${GPU_TESTS[*]}"
  say "  other-cuda-tests: ${PYTEST[*]} --junitxml=\$OUT/tests-cuda-other.xml ${OTHER_CUDA_TESTS[*]}"
  say "  trt-inspect: the TensorRT engine inspector, where tensorrt imports"
  say "  bench: $PY benchmarks/gpu.py --workdir /tmp/vlrt-gpu-bench"
}

case $what in
  dry-run) dry_run ;;
  carry) carry ;;
  tests) setup_python; test_steps ;;
  kernels) setup_python; kernel_steps ;;
  bench) setup_python; bench_steps ;;
  all) setup_python; test_steps; bench_steps ;;
  *) echo "usage: bash tests/gpu/session.sh {dry-run|carry|tests|kernels|bench|all}" >&2; exit 2 ;;
esac

if ((${#failed[@]})); then
  say "SESSION FAILED: ${failed[*]} ($((SECONDS - START)) s; logs in $OUT)" >&2
  exit 1
fi
say "session $what: every step passed ($((SECONDS - START)) s; logs in $OUT)"
