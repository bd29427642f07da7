"""Errors a user can fix. The CLI prints their message on one line and exits with code 2."""


class UnseeError(Exception):
    """Bad input or configuration: the message says what is wrong and what to do."""
