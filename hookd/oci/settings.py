"""Settings of the registry client: what to trust, how long to wait, how much to read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from hookd.config import ConfigError
from hookd.oci.platforms import Platform
from hookd.oci.reference import normalize_registry_host

MiB = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """A username and password for one registry host: sent as HTTP Basic to a registry that
    asks for Basic, and to the token endpoint (the challenge's realm) of a registry that asks
    for Bearer. The password is excluded from ``repr`` so settings can be logged.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (self.username and self.password):
            raise ConfigError("registry credentials need both a username and a password")
        if not (self.username.isprintable() and self.password.isprintable()):
            raise ConfigError("registry credentials contain control characters")
        if ":" in self.username:
            raise ConfigError("a registry username cannot contain ':'")


def _host(value: str, what: str) -> str:
    try:
        return normalize_registry_host(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} is invalid: {exc}") from None


def _mirror_host(value: str, plain_http: frozenset[str], registry: str) -> str:
    scheme, sep, rest = value.partition("://")
    host = _host((rest if sep else value).rstrip("/"), f"mirror of {registry}")
    if sep and scheme not in ("http", "https"):
        raise ConfigError(f"mirror {value!r} of {registry} must be an http(s) URL or host[:port]")
    if sep and (scheme == "http") != (host in plain_http):
        raise ConfigError(
            f"mirror {value!r} of {registry}: list {host} in plain_http_registries to use "
            "plain HTTP, or write it as https://"
        )
    return host


@dataclass(frozen=True)
class RegistrySettings:
    """How hookd talks to registries. Every field has a safe default.

    Registry host keys (``plain_http_registries``, ``mirrors``, ``credentials``) are written
    ``host[:port]`` and normalised like image references (``docker.io`` means Docker Hub).
    Mirror entries are ``host[:port]`` (``https://`` optional); they use plain HTTP only when
    listed in ``plain_http_registries``. Mirrors are tried in order before the origin.
    """

    platform: str = "linux/amd64"
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    request_deadline: float = 60.0
    max_manifest_bytes: int = 4 * MiB
    max_config_bytes: int = 8 * MiB
    max_redirects: int = 5
    verify_tls: bool | str = True
    plain_http_registries: frozenset[str] = frozenset()
    mirrors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    cache_dir: str | None = None
    memory_cache_entries: int = 256
    memory_cache_bytes: int = 32 * MiB
    tag_ttl: float = 300.0
    engine_socket: str | None = None

    def __post_init__(self) -> None:
        try:
            Platform.parse(self.platform)
        except ValueError as exc:
            raise ConfigError(f"registry platform: {exc}") from None
        for name in ("connect_timeout", "read_timeout", "request_deadline"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"registry {name} must be between 0 and 3600 seconds")
        for name in ("max_manifest_bytes", "max_config_bytes"):
            if not 1024 <= getattr(self, name) <= 256 * MiB:
                raise ConfigError(f"registry {name} must be between 1 KiB and 256 MiB")
        if not 0 <= self.max_redirects <= 20:
            raise ConfigError("registry max_redirects must be between 0 and 20")
        if self.memory_cache_entries < 0 or self.memory_cache_bytes < 0 or self.tag_ttl < 0:
            raise ConfigError("registry cache sizes and tag_ttl cannot be negative")
        if isinstance(self.verify_tls, str) and not self.verify_tls:
            raise ConfigError("registry verify_tls must be true, false or a CA bundle path")
        plain_hosts: object = self.plain_http_registries
        if isinstance(plain_hosts, str) or any(isinstance(v, str) for v in self.mirrors.values()):
            raise ConfigError("registry plain_http_registries and mirrors take lists of hosts")
        plain = frozenset(_host(h, "plain-HTTP registry") for h in self.plain_http_registries)
        mirrors = {
            _host(registry, "mirrored registry"): tuple(
                _mirror_host(m, plain, registry) for m in entries
            )
            for registry, entries in self.mirrors.items()
        }
        credentials = {_host(h, "credentials host"): c for h, c in self.credentials.items()}
        object.__setattr__(self, "plain_http_registries", plain)
        object.__setattr__(self, "mirrors", MappingProxyType(mirrors))
        object.__setattr__(self, "credentials", MappingProxyType(credentials))

    @property
    def target_platform(self) -> Platform:
        return Platform.parse(self.platform)

    def scheme_for(self, host: str) -> str:
        """``http`` for hosts listed in ``plain_http_registries``, ``https`` otherwise."""
        return "http" if host in self.plain_http_registries else "https"
