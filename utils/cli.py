"""What every command line of the project shares: a user error is one clear line, not a traceback."""
import os
import sys
from typing import Callable, Optional, Sequence

from .errors import UserError

DEBUG_ENV = "VPR_DEBUG"


def run_command(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None):
    """Run ``main(argv)`` and return what it returns; a UserError (a configuration, data or checkpoint problem) prints
    ``error: <message>`` and exits with status 2. ``VPR_DEBUG=1`` shows the traceback instead.
    Any other exception is a bug and keeps its traceback."""
    try:
        return main(argv)
    except UserError as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
