"""PKCS#1 v1.5 blocks built by hand, and signed raw, for tests of the RS256 check.

Written out here rather than taken from the code under test: the DigestInfo
prefixes are RFC 8017's (9.2, note 1), and a block is put through the raw RSA
private operation, so a test can sign any encoding it likes with the pool's
own key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")
#: A 2048-bit key's block and signature length.
BLOCK_BYTES = 256


def block(payload: bytes, *, kind: int = 1, filler: int = 0xFF) -> bytes:
    """``00 kind filler.. 00 payload``, as long as a 2048-bit modulus."""
    return bytes([0, kind]) + bytes([filler]) * (BLOCK_BYTES - 3 - len(payload)) + b"\x00" + payload


def right_block(digest: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 of a SHA-256 ``digest``: the one block a genuine RS256 signature holds."""
    return block(SHA256_DIGEST_INFO + digest)


def blocks_almost_right(digest: bytes) -> dict[str, bytes]:
    """Blocks that differ from :func:`right_block` in one way each, by name."""
    right = right_block(digest)
    return {
        "digest-without-digestinfo": block(digest),
        "sha1-digestinfo-prefix": block(SHA1_DIGEST_INFO + digest),
        "digestinfo-with-a-trailing-byte": block(SHA256_DIGEST_INFO + digest + b"\x00"),
        "digestinfo-with-a-leading-byte": block(b"\x00" + SHA256_DIGEST_INFO + digest),
        "digestinfo-with-a-changed-length-byte": block(SHA256_DIGEST_INFO[:-1] + b"\x21" + digest),
        "block-type-2": block(SHA256_DIGEST_INFO + digest, kind=2),
        "padding-not-ff": block(SHA256_DIGEST_INFO + digest, filler=0xFE),
        "one-padding-byte-not-ff": right[:10] + b"\x00" + right[11:],
        "nonzero-first-byte": b"\x01" + right[1:],
        "digest-off-by-one-bit": right[:-1] + bytes([right[-1] ^ 1]),
    }


def raw_signature(private_key: rsa.RSAPrivateKey, block_bytes: bytes) -> bytes:
    """``block_bytes`` through the raw RSA private operation, as long as the modulus."""
    numbers = private_key.private_numbers()
    modulus = numbers.public_numbers.n
    return pow(int.from_bytes(block_bytes, "big"), numbers.d, modulus).to_bytes(BLOCK_BYTES, "big")
