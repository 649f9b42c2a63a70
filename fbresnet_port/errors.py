"""Errors that are the user's to fix (a wrong flag, a missing file): printed without a traceback."""


class UserError(Exception):
    """A mistake in the user's input. ``main.py`` prints ``error: <message>`` and exits with status 1."""
