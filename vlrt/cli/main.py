"""The `vlrt` command: one subcommand per file in this package."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vlrt.cli import bench, build, demo, embed, export, search
from vlrt.errors import VlrtError

COMMANDS = (export, build, embed, search, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlrt", description="Inference runtime for CLIP-family video-text retrieval models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vlrt: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except VlrtError as exc:
        print(f"vlrt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vlrt: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from vlrt import __version__

    return f"vlrt {__version__}"


if __name__ == "__main__":
    sys.exit(main())
