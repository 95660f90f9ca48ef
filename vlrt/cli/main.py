"""The `vlrt` command: one subcommand per file in this package."""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from vlrt.cli import bench, build, demo, embed, export, merge, search, serve, triton
from vlrt.cli.common import Parser, fail, print_json
from vlrt.errors import VlrtError

COMMANDS = (export, build, embed, merge, search, serve, triton, bench, demo)


def build_parser(*, json_errors: bool = False) -> Parser:
    parser = Parser(prog="vlrt", description="Inference runtime for CLIP-family video-text retrieval models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    parser.commands = dict(sub.choices)
    for p in (parser, *parser.commands.values()):
        p.json_errors = json_errors
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(json_errors="--json" in argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would blame the top-level parser; the subcommand's usage is the useful one
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="vlrt: %(levelname)s: %(message)s", stream=sys.stderr)
    json_mode = bool(getattr(args, "json", False))
    try:
        return int(args.func(args) or 0)
    except VlrtError as exc:
        return fail(str(exc), json_mode=json_mode)
    except KeyboardInterrupt:
        print("vlrt: interrupted", file=sys.stderr)
        if json_mode:
            print_json({"error": "interrupted"})
        return 130


def _version() -> str:
    from vlrt import __version__

    return f"vlrt {__version__}"


if __name__ == "__main__":
    sys.exit(main())
