"""User-facing errors: the CLI prints them as one line ``error: ...`` and exits with code 2."""


class InputError(Exception):
    """Bad input from the user (path, file content, option); the message is shown as is."""
