"""Subcommands beyond `generate`: registered here so cli.py stays short. Filled in as they land."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add eval / serve / client / bench subcommands."""
    from runtime.serving.cli import add_client_parser, add_serve_parser

    add_serve_parser(sub)
    add_client_parser(sub)
