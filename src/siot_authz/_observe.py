"""What the pipeline reports as it runs, for metrics; the observer watches outcomes and never steers them.

The verifier makes one observer call per verification and the key cache one
per JWKS fetch. Everything slower to compute (key ages, key counts,
revocation state) is not pushed at all: a metrics exporter reads it from
:meth:`TokenVerifier.health` when it is scraped, so it costs the request
path nothing.

Labels are bounded by construction: a pool id comes from configuration
(or is ``""`` for a token refused before it was routed to a pool), a code
is one of the fixed :class:`AuthError` codes, and a fetch outcome is one of
``ok`` (keys stored), ``error`` (the endpoint failed) and ``invalid`` (it
answered something that is not a usable JWKS). Kids, issuers and usernames
are never passed.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Observer"]


class Observer(Protocol):
    """Receives one call per verification and one per key fetch; must be quick and must not raise."""

    def verification(self, pool_id: str, code: str | None, cache_hit: bool) -> None:
        """A verification ended: accepted when ``code`` is None, else refused with that code."""

    def jwks_fetch(self, pool_id: str, outcome: str, seconds: float) -> None:
        """A JWKS fetch for ``pool_id`` ended with ``outcome`` (``ok``, ``error`` or ``invalid``) after ``seconds``."""
