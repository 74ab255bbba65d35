"""User-facing errors.

Every problem a user can fix (a bad config key, a malformed row, a missing file) is raised as
an `FtpipeError` whose message is one paragraph: what is wrong, where (file, row, dotted config
key), and how to fix it. The CLI prints it without a traceback and exits non-zero.
"""


class FtpipeError(Exception):
    """A problem the user can fix; the message says where and how."""


class ConfigError(FtpipeError):
    """The config file, an override or a config value is invalid."""


class DataError(FtpipeError):
    """An input file cannot be read or fails validation."""


def reason(exc: BaseException) -> str:
    """A library exception's message as one line without a closing period, for embedding."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
