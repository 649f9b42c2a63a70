"""Errors that are the user's to fix (a wrong flag, a missing file): printed without a traceback.

Warnings for the user go through :func:`note` (one ``note: ...`` line on stderr), not Python's
``warnings`` module.
"""
from __future__ import annotations

import sys
from typing import Sequence

import click


class UserError(Exception):
    """A mistake in the user's input. ``main.py`` prints ``error: <message>`` and exits with status 1."""


def unreadable_t7(what: str, path: object, err: Exception, fix: str) -> UserError:
    """A :class:`UserError` for a user-given file that ``t7.load`` cannot read.

    ``what`` names where the file came from (``'-retrain model.t7'``); the message keeps the reader's
    byte offset and expectation (without repeating the file name) and ends with ``fix``.
    """
    detail = str(err)
    prefix = f"{path}: "
    if detail.startswith(prefix):
        detail = detail[len(prefix):]
    return UserError(f"{what}: not a readable Torch .t7 file ({detail}); {fix}")


def note(message: str) -> None:
    """Tell the user something on stderr as one ``note: <message>`` line (the port's warnings)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def run_click(command: click.Command, argv: Sequence[str] | None, prog: str, prefix: str = "") -> int:
    """Run the click ``command`` on ``argv`` (default: ``sys.argv[1:]``) and return its exit status: a usage
    mistake or a :class:`UserError` is one ``stderr`` line (``prefix`` + the message) and status 1."""
    try:
        return command.main(args=list(sys.argv[1:] if argv is None else argv), prog_name=prog,
                            standalone_mode=False) or 0
    except click.exceptions.Exit as e:      # --help
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"{prefix}{e.format_message()} (see {prog} --help)", err=True)
        return 1
    except UserError as e:
        click.echo(f"{prefix}{e}", err=True)
        return 1
