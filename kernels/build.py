"""Compile vlrt's CUDA kernels and TensorRT plugin with nvcc: a compile-only check, and the
shared library the GPU tests load.

    python kernels/build.py check [--arch 87 ...] [--out DIR]         # compile, link, verify; no GPU needed
    python kernels/build.py lib --arch 90 [--out DIR]                  # libvlrt_kernels.so for one GPU
    python kernels/build.py nvcc                                       # print the nvcc found (for CMake)
    python kernels/build.py inspect FILE [--arch 90]                   # device code in an object or library

nvcc comes, in this order, from $VLRT_NVCC or $CUDACXX, the `nvidia-cuda-nvcc` wheel in this
Python environment (site-packages/nvidia/cu13/bin/nvcc), PATH, /usr/local/cuda/bin. TensorRT's
headers from $TENSORRT_INCLUDE_DIR or the `kernel-lens` wheel (kernel_lens/include/tensorrt);
without them the plugin is left out and said so. docs/kernels.md lists the wheels.

`check` verifies every object by reading its embedded fatbin: it must hold a cubin (ELF, EM_CUDA)
for each requested architecture. `cuobjdump --list-elf` is run as a second opinion when found.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

KERNELS = Path(__file__).resolve().parent
SOURCES = ("token_merge.cu", "preprocess.cu", "status.cpp")
PLUGIN_SOURCES = ("plugins/token_merge_plugin.cpp",)
DEFAULT_ARCHS = ("80", "87", "89", "90")  # A100, Jetson Orin, L4 and RTX 40, H100
LIBRARY = "libvlrt_kernels.so"
EXPORTS = ("vlrt_token_merge", "vlrt_token_merge_shared_bytes", "vlrt_preprocess",
           "vlrt_preprocess_geometry", "vlrt_status_string")
PLUGIN_EXPORTS = ("getCreators", "setLoggerFinder")
FLAGS = ("-std=c++17", "-O3", "-Xcompiler=-fPIC,-fvisibility=hidden,-Wall,-Wextra")
STRICT = ("-Werror=all-warnings",)  # for the check, with the pinned nvcc; another nvcc may warn more
FATBIN_MAGIC = 0xBA55ED50
EM_CUDA = 190


class BuildError(RuntimeError):
    """A compiler or linker failed; the message holds its command and output."""


@dataclass
class Toolchain:
    nvcc: Path
    tensorrt_include: Path | None
    cuobjdump: Path | None

    def version(self) -> str:
        out = subprocess.run([str(self.nvcc), "--version"], capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()[-1]


@dataclass
class Compiled:
    source: str
    output: Path
    seconds: float


@dataclass
class Report:
    toolchain: Toolchain
    archs: tuple[str, ...]
    objects: list[Compiled] = field(default_factory=list)
    library: Path | None = None
    plugin: bool = False
    notes: list[str] = field(default_factory=list)


def _wheel_dirs() -> list[Path]:
    """site-packages/nvidia/<pkg> directories of NVIDIA's CUDA wheels in this environment."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def find_nvcc() -> Path | None:
    """The nvcc to use, or None; see the module docstring for the order."""
    for var in ("VLRT_NVCC", "CUDACXX"):
        if os.environ.get(var):
            return Path(os.environ[var])
    for base in _wheel_dirs():
        for rel in ("cu13/bin/nvcc", "cuda_nvcc/bin/nvcc"):  # CUDA 13 wheels; CUDA 12 wheels
            if (base / rel).is_file():
                return base / rel
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    default = Path("/usr/local/cuda/bin/nvcc")
    return default if default.is_file() else None


def find_tensorrt_include() -> Path | None:
    """A directory holding NvInferRuntime.h, or None."""
    candidates = []
    if os.environ.get("TENSORRT_INCLUDE_DIR"):
        candidates.append(Path(os.environ["TENSORRT_INCLUDE_DIR"]))
    spec = importlib.util.find_spec("kernel_lens")  # locates the package without importing it (it needs torch)
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "include" / "tensorrt")
    candidates += [Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu")]
    return next((c for c in candidates if (c / "NvInferRuntime.h").is_file()), None)


def find_toolchain() -> Toolchain | None:
    nvcc = find_nvcc()
    if nvcc is None:
        return None
    cuobjdump = nvcc.parent / "cuobjdump"
    if not cuobjdump.is_file():
        cuobjdump = Path(shutil.which("cuobjdump") or "/nonexistent")
    return Toolchain(nvcc, find_tensorrt_include(), cuobjdump if cuobjdump.is_file() else None)


def gencode(archs: tuple[str, ...]) -> list[str]:
    """SASS for every arch, plus PTX of the newest so that later GPUs can JIT it."""
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    newest = max(archs, key=int)
    return flags + [f"-gencode=arch=compute_{newest},code=compute_{newest}"]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{result.stdout}{result.stderr}")


def compile_source(tc: Toolchain, source: str, out_dir: Path, archs: tuple[str, ...], strict: bool) -> Compiled:
    """nvcc -c of one source (a .cpp goes to the host compiler through nvcc)."""
    output = out_dir / (Path(source).stem + ".o")
    cmd = [str(tc.nvcc), "-c", *FLAGS, *(STRICT if strict else ()), *gencode(archs), f"-I{KERNELS}"]
    if source in PLUGIN_SOURCES:
        cmd.append(f"-isystem={tc.tensorrt_include}")  # its headers' deprecation warnings are not ours
    start = time.perf_counter()
    _run([*cmd, str(KERNELS / source), "-o", str(output)])
    return Compiled(source, output, time.perf_counter() - start)


def link(tc: Toolchain, objects: list[Path], output: Path) -> None:
    """A shared library with the CUDA runtime linked statically (nvcc's default)."""
    # The wheels keep libcudart_static.a in nvidia/cu13/lib, where nvcc's profile (lib64) does not look.
    libdirs = [f"-L{d}" for d in (tc.nvcc.parent.parent / "lib",) if d.is_dir()]
    _run([str(tc.nvcc), "-shared", *libdirs, *[str(o) for o in objects], "-o", str(output),
          "-Xlinker=--no-undefined"])


def build(out_dir: Path, archs: tuple[str, ...] = DEFAULT_ARCHS, *, plugin: bool = True, strict: bool = True,
          jobs: int | None = None) -> Report:
    """Compile every source for `archs` (warnings are errors when `strict`), link libvlrt_kernels.so."""
    tc = find_toolchain()
    if tc is None:
        raise BuildError("no nvcc found: pip install the wheels listed in docs/kernels.md, or set VLRT_NVCC")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(tc, tuple(archs))
    sources = list(SOURCES)
    if plugin and tc.tensorrt_include is not None:
        sources += PLUGIN_SOURCES
        report.plugin = True
    elif plugin:
        report.notes.append("TensorRT headers not found (pip install --no-deps kernel-lens, or set "
                            "TENSORRT_INCLUDE_DIR): plugin not built")
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        report.objects = list(pool.map(lambda s: compile_source(tc, s, out_dir, report.archs, strict), sources))
    report.library = out_dir / LIBRARY
    link(tc, [c.output for c in report.objects], report.library)
    return report


def fatbin_containers(obj: Path) -> list[list[tuple[str, int, bool]]]:
    """The fatbin containers in an object's or library's .nv_fatbin section, each as its entries
    (kind, arch, payload_is_cuda_elf).

    kind is "elf" (a cubin) or "ptx"; arch is the SM number (87, 90, ...). An object holds one
    container; a linked library one per object with device code, and one from the static CUDA
    runtime. A container is a 16-byte header (magic 0xBA55ED50, version, header size, payload
    size), then entries, each a header (kind at 0, its own size at 4, payload size at 8, arch at
    28) followed by its payload. Containers are 8-byte aligned; the gaps are zeros.
    """
    section = _elf_section(obj.read_bytes(), ".nv_fatbin")
    containers = []
    offset = 0
    while offset + 16 <= len(section):
        magic, _, header, size = struct.unpack_from("<IHHQ", section, offset)
        if magic != FATBIN_MAGIC:
            if magic == 0:
                offset += 8
                continue
            break
        entries = []
        pos, end = offset + header, offset + header + size
        while pos < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", section, pos)
            arch = struct.unpack_from("<I", section, pos + 28)[0]
            body = section[pos + entry_header: pos + entry_header + 20]
            is_cuda_elf = body[:4] == b"\x7fELF" and struct.unpack_from("<H", body, 18)[0] == EM_CUDA
            entries.append(({1: "ptx", 2: "elf"}.get(kind, f"kind{kind}"), arch, is_cuda_elf))
            pos += entry_header + payload
        containers.append(entries)
        offset = end
    return containers


def fatbin_entries(obj: Path) -> list[tuple[str, int, bool]]:
    """Every entry of every fatbin container in `obj` (see `fatbin_containers`)."""
    return [entry for container in fatbin_containers(obj) for entry in container]


def runs_on(entries: list[tuple[str, int, bool]], arch: int) -> bool:
    """Whether one container's entries hold code a device of compute capability `arch` runs: a
    cubin of exactly that architecture (the build lists each one it targets), or PTX of an older
    or equal one, which the driver compiles when the library loads."""
    return any((kind == "elf" and is_elf and a == arch) or (kind == "ptx" and a <= arch)
               for kind, a, is_elf in entries)


def missing_device_code(library: Path, arch: int) -> str | None:
    """Why `library` cannot run vlrt's kernels on an sm_`arch` device, or None when it can: each
    kernel source is its own container, so at least that many containers must run there."""
    containers = fatbin_containers(library)
    usable = sum(runs_on(c, arch) for c in containers)
    needed = sum(s.endswith(".cu") for s in SOURCES)
    if usable >= needed:
        return None
    found = [[f"{k}:sm_{a}" for k, a, _ in c] for c in containers]
    return f"{library}: {usable} of the {needed} kernel containers have code for sm_{arch} (found {found})"


def _elf_section(data: bytes, name: str) -> bytes:
    """The bytes of a named section of a little-endian ELF64 file (b'' if absent)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not an ELF64 file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count, strndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * entsize) for i in range(count)]
    names = headers[strndx][4]
    for name_off, _, _, _, offset, size in headers:
        end = data.index(b"\0", names + name_off)
        if data[names + name_off: end].decode() == name:
            return data[offset: offset + size]
    return b""


def cuobjdump_elfs(tc: Toolchain, obj: Path) -> list[str] | None:
    """Names of the cubins `cuobjdump --list-elf` sees (e.g. token_merge.1.sm_87.cubin), or None."""
    if tc.cuobjdump is None:
        return None
    out = subprocess.run([str(tc.cuobjdump), "--list-elf", str(obj)], capture_output=True, text=True, check=True)
    return [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("ELF file")]


def verify(report: Report) -> list[str]:
    """Problems found in the built objects (an empty list when all is well)."""
    problems = []
    for c in report.objects:
        if not c.output.is_file():
            problems.append(f"{c.source}: no object at {c.output}")
            continue
        if c.source.endswith(".cpp"):
            continue  # host code only
        entries = fatbin_entries(c.output)
        for arch in report.archs:
            if ("elf", int(arch), True) not in entries:
                problems.append(f"{c.source}: no sm_{arch} cubin in its fatbin (found {entries})")
        elfs = cuobjdump_elfs(report.toolchain, c.output)
        if elfs is not None:
            missing = [a for a in report.archs if not any(e.endswith(f".sm_{a}.cubin") for e in elfs)]
            if missing:
                problems.append(f"{c.source}: cuobjdump lists no cubin for sm_{missing} ({elfs})")
    return problems


def _summary(report: Report, problems: list[str], total: float) -> dict:
    return {
        "nvcc": str(report.toolchain.nvcc),
        "nvcc_version": report.toolchain.version(),
        "tensorrt_include": str(report.toolchain.tensorrt_include) if report.plugin else None,
        "archs": list(report.archs),
        "objects": {c.source: {"path": str(c.output), "seconds": round(c.seconds, 2),
                               "fatbin": [f"{k}:sm_{a}" for k, a, _ in fatbin_entries(c.output)]
                               if c.source.endswith(".cu") else []}
                    for c in report.objects},
        "library": str(report.library),
        "seconds": round(total, 2),
        "notes": report.notes,
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("check", "lib", "nvcc", "inspect"))
    parser.add_argument("file", nargs="?", type=Path, help="inspect: the object or library to read")
    parser.add_argument("--arch", action="append",
                        help="SM number, repeatable (default: 80, 87, 89 and 90); inspect: the device's")
    parser.add_argument("--out", type=Path, default=Path("build/kernels"), help="output folder")
    parser.add_argument("--no-plugin", action="store_true", help="leave the TensorRT plugin out")
    args = parser.parse_args(argv)
    if args.command == "nvcc":
        nvcc = find_nvcc()
        print(nvcc or "", end="\n" if nvcc else "")
        return 0 if nvcc else 1
    if args.command == "inspect":
        if args.file is None or not args.file.is_file():
            parser.error("inspect needs an existing object or library")
        containers = fatbin_containers(args.file)
        print(json.dumps({"file": str(args.file), "bytes": args.file.stat().st_size,
                          "fatbins": [[f"{k}:sm_{a}" for k, a, _ in c] for c in containers]}, indent=2))
        problems = [p for a in args.arch or () if (p := missing_device_code(args.file, int(a)))]
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    archs = tuple(args.arch or DEFAULT_ARCHS)
    start = time.perf_counter()
    try:
        report = build(args.out, archs, plugin=not args.no_plugin, strict=args.command == "check")
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    problems = verify(report) if args.command == "check" else []
    print(json.dumps(_summary(report, problems, time.perf_counter() - start), indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
