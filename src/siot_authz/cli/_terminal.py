"""The CLI's view of the terminal: where output goes, and how it asks the user things.

Commands never touch ``sys.std*`` or ``getpass`` directly; tests hand
:func:`siot_authz.cli.main` a terminal with scripted answers instead.
"""

from __future__ import annotations

import getpass
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
        """Print a result line."""
        print(text, file=self.stdout)

    def err(self, text: str) -> None:
        """Print a message for the person, not for a pipe."""
        print(text, file=self.stderr)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or exotic streams
        return False
