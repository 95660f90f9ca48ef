#!/usr/bin/env bash
# What a GPU session runs on the device machine (docs/gpu.md), from the repository root, after the
# carried wheels are installed and PYTHONPATH points at them and at the checkout:
#
#   bash tests/gpu/session.sh tests   # call 1: environment, GPU-marked tests     (~3-5 min)
#   bash tests/gpu/session.sh bench   # call 2: benchmarks/gpu.py -> results JSON + md (~5-8 min)
#   bash tests/gpu/session.sh all     # both, where one call's 10 minutes suffice
#
# Everything it prints is also written under $OUT (at most 6 files): env.txt, tests-gpu.txt,
# tests-cuda-other.txt, bench.txt and the benchmark's gpu-<device>.json/.md, which the session
# then copies into benchmarks/results/ and commits.
set -uo pipefail
what=${1:-all}
OUT=${OUT:-out/gpu-session}
mkdir -p "$OUT"
# cuda-marked tests fail, not skip, if CUDA is missing (tests/gpu and tests/kernels both read it)
export VLRT_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
status=0

environment() {
  nvidia-smi
  echo "--- driver video libraries (NVDEC needs libnvcuvid.so.1 and libcuda.so.1)"
  ldconfig -p | grep -E "libnvcuvid|libcuda\.so" || echo "NOT FOUND by ldconfig"
  ls /usr/local/nvidia/lib64 2>/dev/null | grep -E "nvcuvid|libcuda" || true
  python3 - <<'EOF'
import platform, torch, av, av.codec.hwaccel
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
print("av", av.__version__, "ffmpeg", av.library_versions["libavcodec"],
      "hwdevices", av.codec.hwaccel.hwdevices_available())
EOF
}

if [[ $what == tests || $what == all ]]; then
  environment 2>&1 | tee "$OUT/env.txt"
  python3 -m pytest -p no:cacheprovider -q -rA tests/gpu 2>&1 | tee "$OUT/tests-gpu.txt"
  status=$((status | PIPESTATUS[0]))
  # Other engineers' cuda-marked tests (kernels against their CPU references), if any exist.
  python3 -m pytest -p no:cacheprovider -q -rfEs -m cuda tests --ignore=tests/gpu 2>&1 | tee "$OUT/tests-cuda-other.txt"
  rc=${PIPESTATUS[0]}
  [[ $rc == 5 ]] || status=$((status | rc))  # 5: no cuda test collected there
fi

if [[ $what == bench || $what == all ]]; then
  python3 benchmarks/gpu.py --workdir /tmp/vlrt-gpu-bench 2>&1 | tee "$OUT/bench.txt"
  status=$((status | PIPESTATUS[0]))
  cp benchmarks/results/gpu-*.json benchmarks/results/gpu-*.md "$OUT/" 2>/dev/null
fi
exit $status
