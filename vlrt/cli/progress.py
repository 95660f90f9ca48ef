"""A progress line for long jobs: count, rate, ETA; drawn on terminals only."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, *, unit: str = "videos", enabled: bool | None = None) -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.failed = 0
        self.t0 = time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, *, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self.enabled:
            sys.stderr.write("\r" + self.line())
            sys.stderr.flush()

    def note(self, message: str) -> None:
        """A message on its own line (stderr), above the progress line."""
        if self.enabled:
            sys.stderr.write("\r\033[K")
        print(message, file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        n = self.done + self.failed
        rate = n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - n) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * n / self.total) if self.total else width
        eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "?"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {n}/{self.total} {self.unit} "
                f"{rate:.2f}/s ETA {eta_text}" + (f", {self.failed} failed" if self.failed else ""))

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
