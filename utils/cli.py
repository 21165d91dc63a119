"""What every command line of the project shares: a user error is one clear line, not a traceback."""
import argparse
import os
import re
import sys
from typing import Callable, Optional, Sequence

from .errors import UserError
from .safe_config import UnsafeConfigError, refused_import_message

DEBUG_ENV = "VPR_DEBUG"


def parse_error_message(err: argparse.ArgumentError) -> str:
    """jsonargparse's message for a setting that does not parse, on one line, naming the flag
    (``Parser key "k": Not of type PositiveInt ...`` -> ``--k: not of type PositiveInt ...``)."""
    message = " ".join(str(err).split())
    message = re.sub(r'Parser key "([\w.]+)": ?', lambda m: f"--{m.group(1)}: ", message)
    return f"{message} (--help lists every setting)"


def error_message(err: BaseException) -> str:
    """The one line to print for a user error, or for a setting that does not parse: the refusal it was raised
    from, when there is one (an unsafe config, a class_path from a module not allowed), else the error's own
    message (jsonargparse's through ``parse_error_message``)."""
    cause: Optional[BaseException] = err
    for _ in range(50):  # the chain of causes; bounded, in case of a cycle
        if cause is None:
            break
        if isinstance(cause, UnsafeConfigError):
            return str(cause)
        refused = refused_import_message(cause)
        if refused:
            return refused
        cause = cause.__cause__ or cause.__context__
    return parse_error_message(err) if isinstance(err, argparse.ArgumentError) else str(err)


def run_command(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None):
    """Run ``main(argv)`` and return what it returns. A UserError (a configuration, data or checkpoint problem)
    or a setting that does not parse (the parsers are made with ``exit_on_error=False``) prints ``error:
    <message>`` on one line and exits with status 2. ``VPR_DEBUG=1`` shows the traceback instead.
    Any other exception is a bug and keeps its traceback."""
    try:
        return main(argv)
    except (UserError, argparse.ArgumentError) as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        # one write of the whole line: processes of a DDP run sharing stderr do not interleave within it
        sys.stderr.write(f"error: {error_message(err)}\n")
        sys.stderr.flush()
        sys.exit(2)
