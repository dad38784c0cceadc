"""Content digests (``algorithm:hex``): grammar, computation and verification.

Only the algorithms registered by the OCI image spec are accepted (sha256, sha512), so a digest
we accept is always one we can verify.
"""

from __future__ import annotations

import hashlib
import re

from hookd.oci.errors import IntegrityError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([0-9a-f]+)", re.ASCII)


def is_digest(value: str) -> bool:
    """True when ``value`` is a sha256 or sha512 digest in canonical (lower-case hex) form."""
    match = _DIGEST_RE.fullmatch(value)
    return match is not None and len(match.group(2)) == _HEX_LENGTH[match.group(1)]


def split_digest(value: str) -> tuple[str, str]:
    """``"sha256:ab.."`` → ``("sha256", "ab..")``; raises :class:`ValueError` if malformed."""
    if not is_digest(value):
        raise ValueError("not a sha256/sha512 digest")
    algorithm, _, hexpart = value.partition(":")
    return algorithm, hexpart


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data`` with ``algorithm`` (``sha256`` or ``sha512``)."""
    if algorithm not in _HEX_LENGTH:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Raise :class:`IntegrityError` unless ``data`` hashes to ``expected``.

    ``what`` names the object for the reason, e.g. ``"config blob sha256:… of library/nginx"``.
    """
    algorithm, _ = split_digest(expected)
    actual = compute_digest(data, algorithm)
    if actual != expected:
        raise IntegrityError(
            f"{what} does not match its digest (got {actual}); the registry or a proxy "
            "served corrupted or substituted content"
        )

