"""The local Docker Engine as a config source (``GET /images/<name>/json`` over a unix socket).

Off unless ``engine_socket`` is configured. The engine is local and trusted more than a remote
registry, but its answer is still read with a timeout, under the request deadline and up to a
size cap (:mod:`hookd.http` on the unix socket; proxies never apply). Its ``Config`` cannot be
verified against a digest (the engine does not return the raw blob), so results from here are
never put in the content cache.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import structlog

from hookd.http import BodyTooLarge, HttpClient, HttpError, HttpOptions, TimedOut
from hookd.oci.digest import is_digest
from hookd.oci.errors import (
    ImageNotFound,
    InvalidResponse,
    NoMatchingPlatform,
    RegistryUnavailable,
    ResponseTooLarge,
    UnexpectedStatus,
)
from hookd.oci.imageconfig import FetchedConfig, config_platform, validate_config
from hookd.oci.manifest import load_object
from hookd.oci.platforms import Platform
from hookd.oci.reference import ImageReference

log = structlog.get_logger(__name__)


def _engine_repository(ref: ImageReference) -> str:
    if ref.is_docker_hub:
        return ref.repository.removeprefix("library/")
    return f"{ref.registry}/{ref.repository}"


def engine_name(ref: ImageReference) -> str:
    """The name the engine knows the image by: ``nginx:1.25``, ``user/app@sha256:…``,
    ``registry.example:5000/app:1.0``."""
    name = _engine_repository(ref)
    return f"{name}@{ref.digest}" if ref.digest else f"{name}:{ref.tag}"


class EngineClient:
    """Reads image configs from the Docker Engine API on ``socket_path``."""

    def __init__(
        self,
        socket_path: str,
        *,
        timeout: float = 10.0,
        deadline: float = 30.0,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.socket_path = socket_path
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._http = HttpClient(HttpOptions(  # no proxy for a unix socket
            unix_socket=socket_path, connect_timeout=timeout, idle_timeout=timeout,
            deadline=deadline, max_body=max_bytes))

    def close(self) -> None:
        self._http.close()

    @property
    def source(self) -> str:
        return f"engine:{self.socket_path}"

    def fetch_config(self, ref: ImageReference, platform: Platform) -> FetchedConfig:
        name = engine_name(ref)
        what = f"local Docker engine image {name}"
        status, body = self._get(f"/images/{quote(name, safe='/:@')}/json", what)
        if status == 404:
            raise ImageNotFound(f"the local Docker engine has no image {name}", code=404)
        if status >= 500:
            raise RegistryUnavailable(f"the local Docker engine answered HTTP {status} for {name}")
        if status != 200:
            raise UnexpectedStatus(f"the local Docker engine answered HTTP {status} for {name}")
        inspect = load_object(body, what)
        image_id = inspect.get("Id")
        if not isinstance(image_id, str) or not is_digest(image_id):
            raise InvalidResponse(f"{what} has no valid image Id")
        document: dict[str, Any] = {}
        for key, field in (("os", "Os"), ("architecture", "Architecture"), ("variant", "Variant")):
            value = inspect.get(field)
            if isinstance(value, str) and value:
                document[key] = value
        section = inspect.get("Config")
        document["config"] = section if section is not None else {}
        validate_config(document, what)
        found = config_platform(document)  # normalised: os/architecture[/variant]
        if found is not None and found.split("/")[:2] != [platform.os, platform.architecture]:
            raise NoMatchingPlatform(
                f"the local Docker engine has {name} for {found}, not for {platform}"
            )
        log.debug("oci.engine.config", image=name)
        return FetchedConfig(
            config=document,
            config_digest=image_id,
            manifest_digest=self._repo_digest(ref, inspect.get("RepoDigests")),
            source=self.source,
        )

    @staticmethod
    def _repo_digest(ref: ImageReference, entries: Any) -> str | None:
        if not isinstance(entries, list):
            return None
        names = {_engine_repository(ref), f"{ref.display_registry}/{ref.repository}"}
        for entry in entries:
            if isinstance(entry, str):
                name, _, digest = entry.partition("@")
                if name in names and is_digest(digest):
                    return digest
        return None

    def _get(self, path: str, what: str) -> tuple[int, bytes]:
        try:
            response = self._http.fetch("GET", "http://docker" + path)
        except BodyTooLarge:
            raise ResponseTooLarge(
                f"{what}: the engine's answer is larger than {self._max_bytes} bytes"
            ) from None
        except HttpError as exc:
            if isinstance(exc, TimedOut) and not exc.idle:
                raise RegistryUnavailable(
                    f"{what}: the engine did not answer within the {self._deadline:g} s deadline"
                ) from None
            raise RegistryUnavailable(
                f"cannot talk to the local Docker engine at {self.socket_path} "
                f"({type(exc).__name__})"
            ) from None
        return response.status, response.body
