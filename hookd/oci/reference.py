"""Image references: parsing OpenNebula's ``docker://`` image PATHs and Docker-style names.

The value comes from an image's ``PATH`` (a marketplace app SOURCE) and its ``URL_ARGS``, both of
which anyone who can create an image or a marketplace app can influence. Everything that does not
match Docker's reference grammar is rejected with :class:`InvalidReference`, so a reference that
parses is safe to put in a URL path and in a log line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from hookd.oci.digest import is_digest
from hookd.oci.errors import InvalidReference

DOCKER_HUB_API_HOST = "registry-1.docker.io"
"""The host that serves Docker Hub's registry API."""

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", DOCKER_HUB_API_HOST})
"""Names that all mean Docker Hub; they normalise to :data:`DOCKER_HUB_API_HOST`."""

DEFAULT_TAG = "latest"

_MAX_INPUT = 4096  # longer PATH values are rejected before any regular expression runs
_MAX_NAME = 255  # distribution/reference NameTotalLengthMax

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[(?P<ipv6>[0-9a-fA-F:.]+)\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII,
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_SAFE_TEXT_RE = re.compile(r"[\x21-\x7e]*", re.ASCII)  # visible ASCII, no whitespace/controls

_ONE_SCHEME = "docker://"


def normalize_registry_host(value: str) -> str:
    """Validate ``host[:port]`` and return its canonical form.

    Host names are lower-cased and the Docker Hub aliases (``docker.io``, ``index.docker.io``)
    become :data:`DOCKER_HUB_API_HOST`. Raises :class:`ValueError` when malformed.
    """
    if len(value) > _MAX_NAME:
        raise ValueError("registry host is longer than 255 characters")
    match = _HOST_RE.fullmatch(value)
    if match is None:
        raise ValueError("registry host is not a valid host[:port]")
    host = match.group("host")
    if match.group("ipv6") is not None:
        try:
            ipaddress.IPv6Address(match.group("ipv6"))
        except ValueError:
            raise ValueError("registry host is not a valid IPv6 address") from None
    elif any(len(label) > 63 for label in host.split(".")):
        raise ValueError("a label of the registry host name is longer than 63 characters")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError("registry port is out of range")
    host = host.lower()
    if port is None and host in DOCKER_HUB_HOSTS:
        return DOCKER_HUB_API_HOST
    return host if port is None else f"{host}:{int(port)}"


@dataclass(frozen=True)
class ImageReference:
    """A validated, normalised image reference.

    ``registry`` is the API host (``host[:port]``; Docker Hub is ``registry-1.docker.io``),
    ``repository`` the path (``library/nginx``). At least one of ``tag`` and ``digest`` is set;
    when both are, the digest is what gets pulled.
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    def __post_init__(self) -> None:
        try:
            canonical = normalize_registry_host(self.registry)
        except ValueError as exc:
            raise InvalidReference(f"invalid image reference: {exc}") from None
        if canonical != self.registry:
            raise InvalidReference(
                f"invalid image reference: registry host must be given as {canonical!r}"
            )
        if len(self.repository) > _MAX_NAME or not all(
            _PATH_COMPONENT_RE.fullmatch(part) for part in self.repository.split("/")
        ):
            raise InvalidReference(
                "invalid image reference: the repository name must be lower-case "
                "components of letters, digits and single separators (. _ __ -)"
            )
        if self.registry == DOCKER_HUB_API_HOST and "/" not in self.repository:
            raise InvalidReference(
                "invalid image reference: Docker Hub official images live under library/"
            )
        if self.tag is None and self.digest is None:
            raise InvalidReference("invalid image reference: neither a tag nor a digest")
        if self.tag is not None and not _TAG_RE.fullmatch(self.tag):
            raise InvalidReference(
                "invalid image reference: a tag is 1-128 characters of letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'"
            )
        if self.digest is not None and not is_digest(self.digest):
            raise InvalidReference(
                "invalid image reference: the digest must be sha256:<64 hex> or "
                "sha512:<128 hex> in lower case"
            )

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB_API_HOST

    @property
    def display_registry(self) -> str:
        """``docker.io`` for Docker Hub (Docker's canonical spelling), else the API host."""
        return "docker.io" if self.is_docker_hub else self.registry

    def __str__(self) -> str:
        text = f"{self.display_registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @classmethod
    def parse(cls, name: str) -> ImageReference:
        """Parse a Docker-style reference: ``nginx``, ``user/app:1.0``,
        ``host:5000/app@sha256:…``, ``docker.io/library/nginx:1.25``.

        Without a tag or digest the tag is ``latest``.
        """
        registry, repository, tag, digest = _parse_name(name)
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @classmethod
    def from_one_path(cls, path: str, url_args: str | None = None) -> ImageReference:
        """The reference OpenNebula's docker downloader pulled for an image.

        ``path`` is the image's ``PATH`` (the marketplace app SOURCE, e.g.
        ``docker://nginx?size=2048&filesystem=ext4&format=raw`` or
        ``docker://registry.example:5000/app?size=…``) and ``url_args`` the image template's
        ``URL_ARGS`` (e.g. ``tag=1.25``). Like ``fs/cp`` we append ``&URL_ARGS`` to the PATH,
        and like ``docker_downloader.sh`` we read the arguments between the first and second
        ``?``, split them on ``&`` and let the last non-empty ``tag=`` win (default ``latest``).

        Also accepted: an inline tag or digest (``docker://nginx:1.25?…``,
        ``docker://nginx@sha256:…``). An inline tag that contradicts a ``tag=`` argument is
        rejected as ambiguous; an inline digest pins the content whatever the tag says.
        """
        for label, value in (("PATH", path), ("URL_ARGS", url_args or "")):
            if len(value) > _MAX_INPUT or not _SAFE_TEXT_RE.fullmatch(value):
                raise InvalidReference(
                    f"image {label} must be at most 4096 visible ASCII characters "
                    "without whitespace"
                )
        if path.startswith("dockerfile://"):
            raise InvalidReference(
                "image was built from a Dockerfile (dockerfile:// PATH), so there is no "
                "registry image to read a config from"
            )
        if not path.startswith(_ONE_SCHEME):
            raise InvalidReference("image PATH does not start with docker://")
        source = path[len(_ONE_SCHEME) :]
        if url_args:
            source += f"&{url_args}"  # fs/cp: SRC+="&$URL_ARGS"
        fields = source.split("?")
        arguments = fields[1] if len(fields) > 1 else source  # cut -d '?' -f 2
        query_tag: str | None = None
        for pair in arguments.split("&"):
            key, _, value = pair.partition("=")
            if key == "tag" and value:  # [ -n "$k" -a -n "$v" ] && eval "$k"="$v"
                query_tag = value
        registry, repository, inline_tag, digest = _parse_name(fields[0])
        if query_tag is not None and inline_tag is not None and inline_tag != query_tag:
            raise InvalidReference(
                f"image PATH names tag {inline_tag!r} but its arguments ask for tag "
                f"{query_tag!r}; remove one of them"
            )
        tag = query_tag or inline_tag
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)


def _parse_name(name: str) -> tuple[str, str, str | None, str | None]:
    """Split and normalise ``[host[:port]/]path[:tag][@digest]``; the tag is not defaulted.

    Grammar errors in the tag, digest and path are reported by :class:`ImageReference` itself.
    """
    if len(name) > _MAX_INPUT or not _SAFE_TEXT_RE.fullmatch(name):
        raise InvalidReference(
            "invalid image reference: it must be at most 4096 visible ASCII characters"
        )
    if not name:
        raise InvalidReference("invalid image reference: the image name is empty")
    remainder, at, digest = name.partition("@")
    if at and not digest:
        raise InvalidReference("invalid image reference: '@' without a digest")
    tag: str | None = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not tag:
            raise InvalidReference("invalid image reference: ':' without a tag")
    if len(remainder) > _MAX_NAME:
        raise InvalidReference("invalid image reference: the name is longer than 255 characters")
    # Docker's rule: the first component is a registry host if it contains "." or ":" or is
    # "localhost"; otherwise the whole name is a Docker Hub repository.
    domain, sep, path = remainder.partition("/")
    if not (sep and ("." in domain or ":" in domain or domain == "localhost")):
        domain, path = "docker.io", remainder
    try:
        registry = normalize_registry_host(domain)
    except ValueError as exc:
        raise InvalidReference(f"invalid image reference: {exc}") from None
    if not path:
        raise InvalidReference("invalid image reference: the repository name is empty")
    if registry == DOCKER_HUB_API_HOST and "/" not in path:
        path = f"library/{path}"
    return registry, path, tag, digest or None
