"""RSA signing keys made once per test process, for tests that need new issuers or rotations, not new keys.

Generating a 2048-bit key takes tens of milliseconds of CPU; a file that makes a fresh issuer
per test and rotates its keys made dozens. A key's kid is random, as a fresh key's is: tests
that need several distinct keys at once take distinct indexes. The session issuer
(tests/conftest.py) makes its own key, so no spare is ever its key.

Many tests choose a kid on purpose: a stranger's key under the issuer's own kid, two pools
publishing one kid with different keys. ``spare_key_as`` gives a spare's material under such a
kid, as a new object each time, so a test may also change its kid without touching the spare.
"""

from __future__ import annotations

from functools import cache

from siot_authz.testing import SigningKey

__all__ = ["spare_key", "spare_key_as"]


@cache
def spare_key(index: int) -> SigningKey:
    """This process's ``index``-th spare key: the same object each time it is asked for."""
    return SigningKey()


def spare_key_as(index: int, kid: str) -> SigningKey:
    """A new ``SigningKey`` holding spare key ``index``'s material under ``kid``.

    Built without ``SigningKey.__init__``, whose one job beyond setting the kid is generating
    the key this skips; the kit's own key generation is tested in test_testing_kit.py.
    """
    key = SigningKey.__new__(SigningKey)
    key.kid = kid
    key.private_key = spare_key(index).private_key
    return key
