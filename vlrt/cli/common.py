"""Options and output helpers shared by the subcommands."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

BACKEND_HELP = "default: the best available here (backends that run only built engines are chosen by name)"


def add_backend(parser: argparse.ArgumentParser, *, help: str = BACKEND_HELP, only_graphs: bool = False) -> None:
    """--backend, its choices and their descriptions from the backend registry. `only_graphs`:
    leave out backends that run only engines built beforehand."""
    from vlrt.runtime import backends

    names = [n for n in backends.names() if not (only_graphs and backends.get(n).needs_engine)]
    listing = "; ".join(f"{n}: {backends.get(n).description}" for n in names)
    parser.add_argument("--backend", choices=names, help=f"{help} ({listing})")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors name the subcommand's usage (argparse's own subparsers do),
    and, when the command line asked for --json, also go to stdout as {"error": ...}."""

    json_errors = False  # set on every parser of a command line by `vlrt.cli.main`

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if self.json_errors:
            print_json({"error": message})
        sys.exit(2)


def fail(message: str, *, json_mode: bool, extra: dict[str, Any] | None = None) -> int:
    """Report a failure: one line on stderr and, in --json mode, {"error": message, ...} on stdout.
    Returns the exit status (1)."""
    print(f"vlrt: error: {message}", file=sys.stderr)
    if json_mode:
        print_json({"error": message, **(extra or {})})
    return 1


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")


def subcommand(sub, name: str, module_doc: str | None) -> argparse.ArgumentParser:
    """A subparser whose help is the command module's docstring."""
    doc = (module_doc or "").strip()
    return sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


class Stages:
    """Reports the stages of a long command on stderr, with elapsed seconds.

    Quiet when asked, and when stderr is not a terminal (pipes and logs get results, not chatter).
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
