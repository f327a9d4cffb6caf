"""The one exception type a user's mistake turns into: entry points print it as one line and exit 2."""


class ConfigError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""
