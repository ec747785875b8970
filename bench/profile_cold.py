"""Where a cold verification spends its time, stage by stage.

Run ``python bench/profile_cold.py``. Each stage of the pipeline is timed on
its own (best of several repeats, so other load on the machine inflates the
figures less), next to the bare RSA verify that ``run.py`` uses as its
reference. Add ``--cprofile`` for a cProfile listing of whole cold
verifications as well.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import pstats
import time
import timeit
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from siot_authz import TokenVerifier
from siot_authz._token import parse_token, strip_bearer
from siot_authz._verified_cache import VerifiedTokenCache
from siot_authz.testing import LocalIssuer

# Many short windows of this thread's CPU time: on a shared machine a long
# window is rarely left alone, and the shortest of many short ones is.
NUMBER = 50
REPEAT = 400
PROFILED_CALLS = 2000


def best_microseconds(run: Callable[[], object]) -> float:
    """The fastest of REPEAT timings of NUMBER calls, per call, in this thread's CPU time."""
    return min(timeit.repeat(run, number=NUMBER, repeat=REPEAT, timer=time.thread_time)) / NUMBER * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile listing")
    args = parser.parse_args()

    with LocalIssuer() as issuer:
        issuer.serve()
        # Realistic Cognito ID-token claims: groups and email besides the usual ones.
        token = issuer.mint(username="profiled", groups=["team-admins", "devices-rw"], email="p@example.com")
        # A disabled cache makes every call a cold one over the same token.
        verifier = TokenVerifier(issuer.settings(verified_cache_size=0))
        verifier.verify_sync(token)  # fetches the keys
        settings = verifier.settings
        parsed = parse_token(token, settings.max_token_bytes)
        key = verifier.keys.get_key_sync(parsed.kid)
        principal = verifier.pools[0].rules.check(parsed.claims, time.time(), parsed.containers)
        cache = VerifiedTokenCache(1_000_000)
        public_key = issuer.signing_key.private_key.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        signing_input, _, signature_b64 = token.rpartition(".")
        signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
        counter = iter(range(10**9))
        digest = VerifiedTokenCache.digest(token)

        def bare() -> None:
            head, _, sig = token.rpartition(".")
            public_key.verify(
                base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), head.encode(), pkcs1, sha256
            )

        stages: list[tuple[str, Callable[[], object]]] = [
            ("reference: bare RS256 verify (split, b64, RSA)", bare),
            ("  of which the RSA verify alone", lambda: public_key.verify(signature, signing_input.encode(), pkcs1, sha256)),
            ("ours: strip_bearer", lambda: strip_bearer(token)),
            ("ours: cache key (SHA-256 of the signed part)", lambda: VerifiedTokenCache.key_of(token)),
            ("ours: parse_token (b64 x3, JSON x2, header)", lambda: parse_token(token, settings.max_token_bytes)),
            ("ours: RSA check given the key's digest", lambda: key.verify_digest(digest, parsed.signature)),
            ("ours: claim rules + Principal", lambda: verifier.pools[0].rules.check(parsed.claims, time.time(), parsed.containers)),
            ("ours: verified-cache put (new digest)", lambda: cache.put(next(counter).to_bytes(32, "big"), principal, parsed.kid, key, signature=parsed.signature_segment)),
            ("ours: whole cold verify_sync", lambda: verifier.verify_sync(token)),
        ]  # fmt: skip
        print(
            f"token: {len(token)} characters; best of {REPEAT} x {NUMBER} calls, microseconds of CPU per call"
        )
        for name, run in stages:
            print(f"  {name:50} {best_microseconds(run):7.2f}")

        if args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(PROFILED_CALLS):
                verifier.verify_sync(token)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        verifier.close()


if __name__ == "__main__":
    main()
