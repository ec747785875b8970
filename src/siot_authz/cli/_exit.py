"""Exit statuses, and the one exception commands raise to stop with a message."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED", "CommandFailed"]

#: The command did what was asked (a token verified, every contract check passed).
EXIT_OK = 0
#: The answer is "no": a token is invalid, a login was refused, a contract check failed.
EXIT_REFUSED = 1
#: No answer could be had: bad configuration or usage, or the network failed.
EXIT_ERROR = 2
#: Stopped with Ctrl-C.
EXIT_INTERRUPTED = 130


class CommandFailed(Exception):
    """Stops a command: ``message`` goes to stderr and the process exits with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
