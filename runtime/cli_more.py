"""Subcommands beyond `generate`: registered here so cli.py stays short."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add eval (and serve / client, when present) subcommands."""
    from runtime.eval import cli as eval_cli

    eval_cli.register(sub)
