"""A small SimpleIOT-style API protected by siot_authz; run it with ``python -m examples.app``."""

from .api import create_app

__all__ = ["create_app"]
