"""Shared by the benchmark scripts: where results go and how they are written."""
from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(out: str | Path, result: dict, markdown: str) -> None:
    """The JSON result and its markdown table side by side (same name, .json and .md)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)


def machine() -> str:
    """The CPU model, its vector extensions and core count: results hold only on such a CPU."""
    from vlrt.runtime.bundle import machine_fingerprint

    m = machine_fingerprint()
    return f"{m['cpu']} ({m['arch']}; {', '.join(m['isa'])}), {os.cpu_count()} cores, no GPU"


def stages():
    """A progress callback for long steps: one line on stderr per stage, with elapsed seconds."""
    import sys
    import time

    t0 = time.perf_counter()
    return lambda message: print(f"[{time.perf_counter() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)
