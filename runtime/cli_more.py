"""Subcommands beyond `generate`: registered here so cli.py stays short."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add eval, serve and client subcommands."""
    from runtime.eval import cli as eval_cli
    from runtime.serving.cli import add_client_parser, add_serve_parser

    eval_cli.register(sub)
    add_serve_parser(sub)
    add_client_parser(sub)
