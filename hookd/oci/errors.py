"""Errors of the registry client: each is a :class:`TransientError` or a :class:`PermanentError`.

Every ``reason`` is one sentence an operator can act on. Reasons name hosts, repositories,
references and HTTP statuses; they never contain credentials, tokens, ``Authorization`` values
or text echoed from a registry response.
"""

from __future__ import annotations

from handlers.errors import PermanentError, TransientError


class RegistryUnavailable(TransientError):
    """Connection refused or reset, a timeout, the overall deadline, HTTP 5xx, 408 or 429."""


class InvalidReference(PermanentError):
    """The image reference (from the image's PATH and URL_ARGS) is not one we can fetch."""


class ImageNotFound(PermanentError):
    """The registry (or the local engine) does not have the image: no such repository, manifest
    or blob (HTTP 404)."""


class AuthenticationFailed(PermanentError):
    """Credentials are missing or refused, or access was denied after authenticating."""


class IntegrityError(PermanentError):
    """Content does not match its digest (or its declared size)."""


class ResponseTooLarge(PermanentError):
    """A response body exceeds the configured size cap."""


class InvalidResponse(PermanentError):
    """A response is malformed: bad JSON, wrong schema, unsupported media type or encoding."""


class RedirectRefused(PermanentError):
    """A redirect loop, too many redirects, an https→http downgrade or a disallowed target."""


class TLSFailure(PermanentError):
    """The TLS handshake failed: certificate not trusted, name mismatch or not a TLS server."""


class NoMatchingPlatform(PermanentError):
    """The image index has no manifest for the configured platform."""


class UnexpectedStatus(PermanentError):
    """The registry answered with an HTTP status that retrying will not change (400, 403, ...)."""
