"""The ``rymi-gateway`` command line.

Subcommands are added by the layers that own them (``gateway.admin`` for the database,
tenants, agents, numbers, keys, secrets, calls and ``demo-seed``); this module builds
the parser and dispatches. Registration imports only the standard library, so that
``rymi-gateway --version`` stays instant: a command's heavy imports happen when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__, admin, serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="rymi-gateway",
        description="Real-time voice media gateway for AI voice agents.",
    )
    parser.add_argument("--version", action="version", version=f"rymi-gateway {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    admin.register(subparsers)
    serve.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "serve", False):
        return serve.run(args)
    if getattr(args, "handler", None) is not None:
        return admin.run(args)
    return 0
