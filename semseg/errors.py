"""The one exception type users see.

Every check that rejects user input (a file, a config key, a label value, a
checkpoint) raises :class:`SemsegError` with a message that names the offending
file or key and says what is wrong. The CLI prints the message alone, never a
traceback. It subclasses ValueError so library callers can catch either.
"""


class SemsegError(ValueError):
    """A user-facing error: bad input, bad config, bad file."""
