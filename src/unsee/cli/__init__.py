"""The ``unsee`` command line (entry point ``unsee = "unsee.cli:app"``). User errors print
one line and exit with code 2.

One module per command group registers its commands on :data:`app` when imported:
:mod:`~unsee.cli.erase` (erase, export, methods), :mod:`~unsee.cli.evaluate` (eval),
:mod:`~unsee.cli.generate` (generate, judge, demo), :mod:`~unsee.cli.toyworld`.
"""

from __future__ import annotations

from unsee.cli import erase, evaluate, generate, toyworld  # each registers its commands
from unsee.cli.common import JUDGES, METHODS, app, user_error

__all__ = ["JUDGES", "METHODS", "app", "main", "user_error"]
# the command modules are imported for what they register on ``app``
_COMMAND_GROUPS = (erase, evaluate, generate, toyworld)


def main() -> None:  # pragma: no cover - console entry point
    app()
