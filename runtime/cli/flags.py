"""Flags shared by the subcommands: one per `RequestParams` field (one hop from CLI to dataclass).

Flags left unset fall back to the pipeline config's `defaults`, then to the dataclass defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from runtime.core.params import BON_MODELS, COMBINES, METHOD_NAMES, OMEGAS, RequestParams

_CHOICES = {"method": METHOD_NAMES, "omega": OMEGAS, "cos_combine": COMBINES, "bon_model": BON_MODELS}


def add_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RequestParams field: --max-step-tokens sets max_step_tokens, and so on."""
    group = parser.add_argument_group("request parameters (unset: the pipeline config's `defaults`, "
                                      "then the value shown)")
    for f in dataclasses.fields(RequestParams):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        shown = f"default {f.default}"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=shown)
        elif kind is tuple:  # a list field: --stop-words "a b" "\n\n" (RequestParams checks the items)
            group.add_argument(flag, dest=f.name, nargs="*", default=None, metavar="VALUE", help=f"{shown}; a list")
        elif f.name in _CHOICES:  # RequestParams checks the value (one message format, exit 2)
            group.add_argument(flag, dest=f.name, default=None, metavar="{" + ",".join(_CHOICES[f.name]) + "}",
                               help=f"{shown}; one of {', '.join(_CHOICES[f.name])}")
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=kind.__name__.upper(), help=shown)


def param_values(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(RequestParams)
            if getattr(args, f.name, None) is not None}
