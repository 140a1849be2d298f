"""`rsd` command line: generate, eval, serve, client.

Each subcommand lives in its own module and registers its parser; heavy imports stay inside the
commands, so `rsd --help` loads no model library.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from runtime.cli import client, evaluate, generate, serve
from runtime.core.errors import RsdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsd", description="Reward-guided speculative decoding")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (generate, evaluate, serve, client):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except RsdError as exc:
        print(f"rsd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
