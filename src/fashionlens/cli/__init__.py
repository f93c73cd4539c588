"""The ``fashionlens`` command: this module builds the parser from each command module's ``add_commands``
and dispatches; each command module (named after its command) parses its arguments and calls the library.

The command modules import the library inside their command functions, not at module top: building the
parser then needs no torch, and ``fashionlens --help`` (or a mistyped flag) answers in 0.3 s instead of
10.5 s with every module imported (measured on the 2-core development machine).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from fashionlens.cli import (
    audit,
    calibrate,
    catalog,
    clean,
    data,
    demo,
    embed,
    evaluate,
    export,
    predict,
    search,
    serve,
    synth,
    train,
)

#: The command modules, in the order ``fashionlens --help`` lists their commands.
COMMANDS = (synth, data, train, evaluate, predict, demo, export, embed, calibrate, catalog, search, serve, audit, clean)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashionlens", description="Garment recognition and retrieval.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad user input: one clear line, exit code 2
        print(f"fashionlens: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
