"""The ``siot-authz`` command: log in, decode, verify, list keys and check a deployed API.

Run ``siot-authz --help`` or ``siot-authz COMMAND --help``. The entry point
is :func:`main`, which returns the exit status instead of exiting, so it can
be called from tests and scripts.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
