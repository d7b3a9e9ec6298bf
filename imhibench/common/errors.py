"""The one exception type users see: a clear message naming the file or key at fault."""


class ImhiBenchError(Exception):
    """Bad input or configuration; the message names the file or key and the problem."""
