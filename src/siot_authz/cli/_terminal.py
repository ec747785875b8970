"""The CLI's view of the terminal: where output goes, and how it asks the user things.

Commands never touch ``sys.std*`` or ``getpass`` directly; tests hand
:func:`siot_authz.cli.main` a terminal with scripted answers instead.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Terminal"]


def _default_stdin() -> TextIO:
    return sys.stdin


def _default_stdout() -> TextIO:
    return sys.stdout


def _default_stderr() -> TextIO:
    return sys.stderr


@dataclass
class Terminal:
    """Standard streams plus prompting; results go to ``stdout``, everything else to ``stderr``."""

    stdin: TextIO = field(default_factory=_default_stdin)
    stdout: TextIO = field(default_factory=_default_stdout)
    stderr: TextIO = field(default_factory=_default_stderr)
    #: True once the reader of stdout has gone (``siot-authz verify ... | head -1``).
    is_stdout_gone: bool = field(default=False, init=False)

    @property
    def is_interactive(self) -> bool:
        """True when a person can answer prompts (stdin is a terminal)."""
        return _isatty(self.stdin)

    @property
    def shows_progress(self) -> bool:
        """True when a spinner on stderr would be seen rather than pollute a log."""
        return _isatty(self.stderr)

    def ask(self, prompt: str) -> str:
        """Read one line, prompting on stderr so stdout holds only results."""
        self.stderr.write(prompt)
        self.stderr.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def ask_secret(self, prompt: str) -> str:
        """Read a secret without echoing it."""
        return getpass.getpass(prompt, stream=self.stderr)

    def read_line(self) -> str:
        """One line of piped input (a password or a token), without its line ending."""
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def read_all(self) -> str:
        """Everything piped in, stripped of surrounding whitespace."""
        return self.stdin.read().strip()

    def out(self, text: str = "") -> None:
        """Print a result line; if the reader has gone, drop it quietly.

        A reader such as ``head -3`` may close the pipe before the result is
        written. That is the reader's choice, not a failure of the command:
        the command still exits with its own status (0 for a valid token),
        not with a traceback and 1, which means "refused". Each line is
        flushed so the broken pipe shows here, not at interpreter exit.
        """
        if self.is_stdout_gone:
            return
        try:
            print(text, file=self.stdout, flush=True)
        except BrokenPipeError:
            self.is_stdout_gone = True
            _silence(self.stdout)

    def err(self, text: str) -> None:
        """Print a message for the person, not for a pipe."""
        print(text, file=self.stderr)


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null, so the interpreter's final flush has nowhere to fail."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO in tests: nothing to flush at exit
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or exotic streams
        return False
