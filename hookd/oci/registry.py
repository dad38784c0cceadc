"""The registry client: the only code in hookd that talks to container registries.

``RegistryClient.fetch_config(ref)`` returns the image config blob for the configured platform:

1. from the content cache when the reference is a digest, or a tag the memo still knows;
2. else from each mirror of the reference's registry in turn, then from the registry itself
   (a failure on a mirror moves on; if everything fails, the origin's error is raised);
3. else, if ``engine_socket`` is configured, from the local Docker engine.

Over HTTP (registry API v2): the tag is resolved with ``HEAD`` (the digest, cheap and not
rate-limited on Docker Hub), manifests are fetched by digest with all four manifest media types
in ``Accept``, an index or manifest list is narrowed to the platform, and the config blob is
fetched. Every manifest and blob is verified against its digest (and ``Docker-Content-Digest``
when sent). Authentication follows the ``WWW-Authenticate`` challenge: anonymous or credentialed
Bearer tokens from the challenge's realm (cached per realm, service, scope and credentials until
``expires_in``), or Basic where a registry asks for it and credentials are configured.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import structlog

from handlers.errors import HookdError
from hookd.http import Proxies
from hookd.oci.cache import ContentCache
from hookd.oci.challenge import Challenge, parse_www_authenticate
from hookd.oci.digest import compute_digest, is_digest, split_digest, verify_digest
from hookd.oci.docker_engine import EngineClient
from hookd.oci.errors import (
    AuthenticationFailed,
    ImageNotFound,
    IntegrityError,
    InvalidReference,
    InvalidResponse,
    RegistryUnavailable,
    ResponseTooLarge,
    UnexpectedStatus,
)
from hookd.oci.imageconfig import FetchedConfig, parse_config_blob
from hookd.oci.manifest import (
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    Descriptor,
    ImageIndex,
    ImageManifest,
    detect_media_type,
    load_object,
    parse_manifest,
    select_platform,
)
from hookd.oci.reference import ImageReference, normalize_registry_host
from hookd.oci.settings import Credentials, RegistrySettings
from hookd.oci.transport import HttpResponse, Transport, host_of

log = structlog.get_logger(__name__)

TOKEN_BODY_LIMIT = 1024 * 1024
DEFAULT_TOKEN_LIFETIME = 60.0
_MAX_TOKEN_LIFETIME = 24 * 3600.0
_MAX_TOKENS = 512
_MAX_INDEX_DEPTH = 3


class _CacheMiss(Exception):
    """Internal: the answer needs the network (raised only when resolving from the cache)."""


@dataclass(frozen=True)
class _Endpoint:
    host: str
    base: str
    label: str


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _raise_for_status(response: HttpResponse, what: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    host = host_of(response.url)
    code = response.error_code
    detail = f" ({code})" if code else ""
    if status == 404:
        raise ImageNotFound(f"{host} does not have {what}{detail}", code=404)
    if status in (408, 429) or status >= 500:
        raise RegistryUnavailable(
            f"{host} answered HTTP {status}{detail} for {what}; retrying later", code=status
        )
    if status == 403:
        raise AuthenticationFailed(
            f"{host} denied access to {what} (HTTP 403{detail}); check the credentials "
            f"configured for {host}",
            code=403,
        )
    if status == 401:
        raise AuthenticationFailed(
            f"{host} refused access to {what} after authenticating (HTTP 401{detail}); the "
            f"repository may not exist, or credentials for {host} are missing or wrong",
            code=401,
        )
    raise UnexpectedStatus(f"{host} answered HTTP {status}{detail} for {what}", code=status)


@dataclass(frozen=True)
class _Token:
    value: str
    valid_until: float


class _Authenticator:
    """Answers 401 challenges; caches bearer tokens per (realm, service, scope, registry)."""

    def __init__(
        self, settings: RegistrySettings, transport: Transport, clock: Callable[[], float]
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: OrderedDict[tuple[str, str, str, str], _Token] = OrderedDict()
        self._token_keys: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self._basic_hosts: set[str] = set()

    def preemptive(self, host: str, repository: str) -> str | None:
        """The ``Authorization`` to send before being asked, when we already know it."""
        credentials = self._settings.credentials.get(host)
        with self._lock:
            if credentials is not None and host in self._basic_hosts:
                return _basic(credentials)
            key = self._token_keys.get((host, repository))
            token = self._tokens.get(key) if key is not None else None
            if token is not None and self._clock() < token.valid_until:
                return f"Bearer {token.value}"
        return None

    def authorize(
        self, host: str, repository: str, header: str | None, stale: str | None
    ) -> tuple[str, bool]:
        """Answer a 401: ``(Authorization value, freshly obtained)``.

        ``stale`` is the value the 401 refused; a cached token equal to it is discarded.
        """
        try:
            challenges = parse_www_authenticate(header or "")
        except ValueError:
            raise InvalidResponse(f"{host} sent an unparsable WWW-Authenticate challenge") from None
        credentials = self._settings.credentials.get(host)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            return self._bearer(host, repository, bearer, credentials, stale)
        if basic is not None:
            if credentials is None:
                raise AuthenticationFailed(
                    f"{host} requires a username and password (HTTP Basic) for {repository}; "
                    f"configure credentials for {host}",
                    code=401,
                )
            with self._lock:
                self._basic_hosts.add(host)
            return _basic(credentials), True
        raise AuthenticationFailed(
            f"{host} asked for authentication without a Bearer or Basic challenge", code=401
        )

    def _bearer(
        self,
        host: str,
        repository: str,
        challenge: Challenge,
        credentials: Credentials | None,
        stale: str | None,
    ) -> tuple[str, bool]:
        realm = challenge.params.get("realm", "")
        if not realm or len(realm) > 2048:
            raise InvalidResponse(f"{host} sent a Bearer challenge without a usable realm")
        self._transport.check_url_allowed(realm, f"the token realm of {host}")
        service = challenge.params.get("service", "")
        scope = challenge.params.get("scope") or f"repository:{repository}:pull"
        key = (realm, service, scope, host)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and (
                stale == f"Bearer {token.value}" or self._clock() >= token.valid_until
            ):
                del self._tokens[key]
                token = None
            if token is not None:
                self._token_keys[(host, repository)] = key
                return f"Bearer {token.value}", False
        token = self._fetch_token(key, repository, credentials)
        with self._lock:
            self._tokens[key] = token
            self._token_keys[(host, repository)] = key
            while len(self._tokens) > _MAX_TOKENS:
                self._tokens.popitem(last=False)
        return f"Bearer {token.value}", True

    def _fetch_token(self, key: tuple[str, str, str, str], repository: str,
                     credentials: Credentials | None) -> _Token:
        realm, service, scope, host = key
        params = [("service", service)] if service else []
        params += [("scope", s) for s in scope.split(" ") if s]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params) if params else realm
        realm_host = host_of(realm)
        what = f"a token for {repository} from {realm_host}"
        issued = self._clock()
        response = self._transport.request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            authorization=_basic(credentials) if credentials is not None else None,
            body_limit=TOKEN_BODY_LIMIT,
            what=what,
        )
        if response.status in (401, 403):
            who = f"the credentials configured for {host}" if credentials else "anonymous access"
            raise AuthenticationFailed(
                f"the token service {realm_host} refused {who} to {repository} "
                f"(HTTP {response.status})",
                code=response.status,
            )
        _raise_for_status(response, what)
        document = load_object(response.body, f"the token response of {realm_host}")
        value = document.get("token") or document.get("access_token")
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= 16384
            or not all("\x21" <= c <= "\x7e" for c in value)
        ):
            raise InvalidResponse(f"the token response of {realm_host} has no usable token")
        lifetime = document.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        lifetime = min(float(lifetime), _MAX_TOKEN_LIFETIME)
        margin = min(10.0, lifetime / 10)
        log.debug("oci.token.obtained", registry=host, realm=realm_host, lifetime=lifetime)
        return _Token(value=value, valid_until=issued + lifetime - margin)


class RegistryClient:
    """Fetches image configs. Thread-safe; close() (or use as a context manager) when done.

    ``proxies``: None (the default) reads them from the environment when the client is made
    (:meth:`hookd.http.Proxies.from_environment`); :data:`hookd.http.DIRECT` uses none.
    ``clock`` drives token lifetimes and the tag memo (not the request deadline, which is
    always real time).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        proxies: Proxies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._platform = settings.target_platform
        self._transport = Transport(settings, proxies)
        self._auth = _Authenticator(settings, self._transport, clock)
        self._cache = ContentCache(
            settings.cache_dir,
            max_entries=settings.memory_cache_entries,
            max_bytes=settings.memory_cache_bytes,
            clock=clock,
        )
        self._engine: EngineClient | None = None
        if settings.engine_socket:
            self._engine = EngineClient(settings.engine_socket, timeout=settings.read_timeout,
                                        deadline=settings.request_deadline,
                                        max_bytes=settings.max_config_bytes)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()
        if self._engine is not None:
            self._engine.close()

    def cached_config(self, config_digest: str) -> FetchedConfig | None:
        """The config blob ``config_digest`` as the cache holds it (memory, then disk, its
        content verified against the digest), or None: no network."""
        if not is_digest(config_digest):
            return None
        data = self._cache.get(config_digest, self._settings.max_config_bytes)
        if data is None:
            return None
        what = f"cached config blob {config_digest}"
        document = parse_config_blob(data, what)
        return FetchedConfig(config=document, config_digest=config_digest, manifest_digest=None,
                             source="cache")

    def fetch_config(self, ref: ImageReference) -> FetchedConfig:
        """The config blob of ``ref`` for the configured platform.

        Raises a :class:`~handlers.errors.TransientError` (retry later) or a
        :class:`~handlers.errors.PermanentError` (see :mod:`hookd.oci.errors`).
        """
        with contextlib.suppress(_CacheMiss):
            return self._resolve(ref, None)
        origin_error: HookdError = InvalidReference(f"no registry endpoint for {ref}")
        for endpoint in self._endpoints(ref):
            try:
                result = self._resolve(ref, endpoint)
            except HookdError as exc:
                log.debug(
                    "oci.source_failed",
                    image=str(ref),
                    source=endpoint.label,
                    error=exc.reason,
                    transient=isinstance(exc, RegistryUnavailable),
                )
                origin_error = exc
                continue
            log.debug(
                "oci.config_fetched",
                image=str(ref),
                source=endpoint.label,
                config_digest=result.config_digest,
            )
            return result
        if self._engine is not None:
            try:
                return self._engine.fetch_config(ref, self._platform)
            except HookdError as exc:
                log.debug(
                    "oci.source_failed",
                    image=str(ref),
                    source=self._engine.source,
                    error=exc.reason,
                )
        raise origin_error

    # -- resolution -----------------------------------------------------------------------

    def _endpoints(self, ref: ImageReference) -> list[_Endpoint]:
        settings = self._settings
        hosts = [(host, "mirror") for host in settings.mirrors.get(ref.registry, ())]
        hosts.append((ref.registry, "registry"))
        return [_Endpoint(host, f"{settings.scheme_for(host)}://{host}", f"{kind}:{host}")
                for host, kind in hosts]

    def _resolve(self, ref: ImageReference, endpoint: _Endpoint | None) -> FetchedConfig:
        """Resolve ``ref`` through ``endpoint``, or from the cache alone when it is None."""
        prefetched: tuple[bytes, str | None] | None = None
        tag_key = (ref.registry, ref.repository, ref.tag or "")
        digest = ref.digest or self._cache.get_tag(tag_key)
        if digest is None:
            if endpoint is None:
                raise _CacheMiss
            digest, prefetched = self._resolve_tag(endpoint, ref)
            self._cache.put_tag(tag_key, digest, self._settings.tag_ttl)
        manifest_digest = digest
        what = f"manifest {ref}"
        manifest = self._manifest(
            endpoint, ref, digest, declared=None, prefetched=prefetched, what=what
        )
        for _ in range(_MAX_INDEX_DEPTH):
            if isinstance(manifest, ImageManifest):
                break
            chosen = select_platform(manifest, self._platform, what)
            manifest_digest = chosen.digest
            what = f"manifest {chosen.digest} ({self._platform}) of {ref.repository}"
            manifest = self._manifest(
                endpoint, ref, chosen.digest, declared=chosen, prefetched=None, what=what
            )
        if not isinstance(manifest, ImageManifest):
            raise InvalidResponse(f"manifest {ref} nests indexes more than {_MAX_INDEX_DEPTH} deep")
        blob_what = f"config blob {manifest.config.digest} of {ref.repository}"
        data = self._blob(endpoint, ref, manifest.config, blob_what)
        document = parse_config_blob(data, blob_what)
        return FetchedConfig(
            config=document,
            config_digest=manifest.config.digest,
            manifest_digest=manifest_digest,
            source=endpoint.label if endpoint is not None else "cache",
        )

    def _resolve_tag(
        self, endpoint: _Endpoint, ref: ImageReference
    ) -> tuple[str, tuple[bytes, str | None] | None]:
        """The manifest digest a tag points to, and the body when we had to GET it.

        ``HEAD`` first: if the digest it names is in the cache, nothing else is needed. Otherwise
        the manifest is fetched by tag, so body and ``Docker-Content-Digest`` come from the
        same answer and are checked against each other.
        """
        path = f"/v2/{ref.repository}/manifests/{ref.tag}"
        what = f"manifest {ref}"
        response = self._request(endpoint, "HEAD", path, ref=ref, body_limit=0, what=what)
        if response.status == 200:
            header = response.headers.get("Docker-Content-Digest", "").strip()
            if is_digest(header) and self._cache.get(header, self._settings.max_manifest_bytes):
                return header, None
        elif response.status != 405:  # HEAD not allowed: fall back to GET
            _raise_for_status(response, what)
        response = self._request(
            endpoint, "GET", path, ref=ref, body_limit=self._settings.max_manifest_bytes, what=what
        )
        _raise_for_status(response, what)
        digest = self._verify_header(response, what) or compute_digest(response.body)
        return digest, (response.body, response.content_type())

    @staticmethod
    def _verify_header(response: HttpResponse, what: str) -> str | None:
        """Check ``Docker-Content-Digest`` (when sent) against the body; return it."""
        header = response.headers.get("Docker-Content-Digest")
        if header is None:
            return None
        header = header.strip()
        if not is_digest(header):
            raise IntegrityError(f"{what} came with a malformed Docker-Content-Digest header")
        algorithm, _ = split_digest(header)
        if compute_digest(response.body, algorithm) != header:
            raise IntegrityError(
                f"{what} does not match the Docker-Content-Digest the registry sent; the "
                "registry or a proxy served corrupted or substituted content"
            )
        return header

    def _manifest(
        self,
        endpoint: _Endpoint | None,
        ref: ImageReference,
        digest: str,
        *,
        declared: Descriptor | None,
        prefetched: tuple[bytes, str | None] | None,
        what: str,
    ) -> ImageIndex | ImageManifest:
        limit = self._settings.max_manifest_bytes
        fetched = prefetched is not None
        if prefetched is not None:
            body, content_type = prefetched
        else:
            cached = self._cache.get(digest, limit)
            if cached is not None:
                body, content_type = cached, None
            elif endpoint is None:
                raise _CacheMiss
            else:
                if declared is not None and declared.size > limit:
                    raise ResponseTooLarge(
                        f"{what} is {declared.size} bytes, larger than the configured cap of "
                        f"{limit} bytes"
                    )
                response = self._request(
                    endpoint,
                    "GET",
                    f"/v2/{ref.repository}/manifests/{digest}",
                    ref=ref,
                    body_limit=declared.size if declared is not None else limit,
                    what=what,
                )
                _raise_for_status(response, what)
                verify_digest(response.body, digest, what)
                self._verify_header(response, what)
                body, content_type, fetched = response.body, response.content_type(), True
        document = load_object(body, what)
        media_type = detect_media_type(content_type, document, what)
        if declared is not None:
            if declared.media_type in MANIFEST_TYPES and declared.media_type != media_type:
                raise InvalidResponse(
                    f"{what} is {media_type} but its index entry says {declared.media_type}"
                )
            if len(body) != declared.size:
                raise IntegrityError(
                    f"{what} is {len(body)} bytes but its index entry says {declared.size}"
                )
        parsed = parse_manifest(media_type, document, what)
        if fetched:
            self._cache.put(digest, body)
        return parsed

    def _blob(
        self,
        endpoint: _Endpoint | None,
        ref: ImageReference,
        descriptor: Descriptor,
        what: str,
    ) -> bytes:
        limit = self._settings.max_config_bytes
        cached = self._cache.get(descriptor.digest, limit)
        if cached is not None and len(cached) == descriptor.size:
            return cached
        if endpoint is None:
            raise _CacheMiss
        if descriptor.size > limit:
            raise ResponseTooLarge(
                f"{what} is {descriptor.size} bytes, larger than the configured cap of "
                f"{limit} bytes (max_config_bytes)"
            )
        response = self._request(
            endpoint,
            "GET",
            f"/v2/{ref.repository}/blobs/{descriptor.digest}",
            ref=ref,
            body_limit=descriptor.size,  # never read more than the manifest promised
            what=what,
        )
        _raise_for_status(response, what)
        if len(response.body) != descriptor.size:
            raise IntegrityError(
                f"{what} is {len(response.body)} bytes but its manifest says {descriptor.size}"
            )
        verify_digest(response.body, descriptor.digest, what)
        self._verify_header(response, what)
        self._cache.put(descriptor.digest, response.body)
        return response.body

    def _request(
        self,
        endpoint: _Endpoint,
        method: str,
        path: str,
        *,
        ref: ImageReference,
        body_limit: int,
        what: str,
    ) -> HttpResponse:
        """Send a request, answering up to two 401 challenges."""
        url = endpoint.base + path
        headers = {"Accept": MANIFEST_ACCEPT} if "/manifests/" in path else {}
        authorization = self._auth.preemptive(endpoint.host, ref.repository)
        final = False
        while True:
            response = self._transport.request(
                method,
                url,
                headers=headers,
                authorization=authorization,
                body_limit=body_limit,
                what=what,
            )
            if response.status != 401:
                return response
            if final:
                _raise_for_status(response, what)
            renewed, fresh = self._auth.authorize(
                endpoint.host,
                ref.repository,
                response.headers.get("WWW-Authenticate"),
                authorization,
            )
            if renewed == authorization:
                _raise_for_status(response, what)
            authorization, final = renewed, fresh


def probe(
    settings: RegistrySettings,
    registry_host: str,
    *,
    proxies: Proxies | None = None,
) -> tuple[bool, str]:
    """Is ``registry_host`` a reachable registry? ``GET /v2/`` answering 200 or 401 is.

    For ``hookd check``: returns ``(ok, one sentence for the operator)`` and never raises.
    """
    try:
        host = normalize_registry_host(registry_host)
    except ValueError as exc:
        return False, f"{registry_host!r} is not a valid registry host: {exc}"
    url = f"{settings.scheme_for(host)}://{host}/v2/"
    transport = Transport(settings, proxies)
    try:
        response = transport.request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            authorization=None,
            body_limit=64 * 1024,
            what=f"the API root of {host}",
        )
    except HookdError as exc:
        return False, exc.reason
    finally:
        transport.close()
    if response.status == 200:
        return True, f"{url} answered 200: registry reachable, anonymous access allowed"
    if response.status == 401:
        return True, f"{url} answered 401: registry reachable, authentication required"
    return False, f"{url} answered HTTP {response.status}, not a registry API v2 endpoint"
