"""RSA signing keys made once per test process, for tests that need new issuers or rotations, not new keys.

Generating a 2048-bit key takes tens of milliseconds of CPU; a file that makes a fresh issuer
per test and rotates its keys made dozens. A key's kid is random, as a fresh key's is: tests
that need several distinct keys at once take distinct indexes.
"""

from __future__ import annotations

from functools import cache

from siot_authz.testing import SigningKey

__all__ = ["spare_key"]


@cache
def spare_key(index: int) -> SigningKey:
    """This process's ``index``-th spare key: the same object each time it is asked for."""
    return SigningKey()
