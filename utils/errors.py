"""The project's own error types: problems with the user's configuration, data or checkpoint.

The command-line tools print these as one line and exit non-zero (``VPR_DEBUG=1`` shows the traceback);
any other exception is a programming error and keeps its traceback. Each type also derives from the
built-in exception that describes it, so ``except FileNotFoundError`` / ``except ValueError`` still work.
"""


class UserError(Exception):
    """A problem the user can fix: the message names it and says how."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (unknown name, dimensions that do not fit, degenerate recipe)."""


class DataError(UserError, ValueError):
    """A data set that is malformed (wrong layout, corrupt file, inconsistent ground truth)."""


class NotFoundError(UserError, FileNotFoundError):
    """A data set, image, checkpoint or config that is not where the settings say."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the model."""


class WriteError(UserError, OSError):
    """A file that could not be written: the disk or quota is full, the file system is read-only, a file size
    limit was reached. ``errno`` is the failed call's."""
