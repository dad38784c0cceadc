"""Manifests, indexes and platform selection (OCI image spec and Docker schema 2).

Input is untrusted: JSON is parsed strictly (no NaN/Infinity, bounded nesting) and every field
we use is type-checked. Text from a document only reaches an error reason after validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookd.oci.digest import is_digest
from hookd.oci.errors import InvalidResponse, NoMatchingPlatform
from hookd.oci.platforms import Platform, normalize

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_MANIFEST_TYPES
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
"""All four types: distribution 2.8 answers 404 for an OCI index and 400 for Docker types
when the Accept header does not list them."""

SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9!#$&^_.+-]{1,127}")
_PLATFORM_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_MAX_SIZE = 2**53


def printable_media_type(value: object) -> str:
    """A media type fit for an error reason, or ``"an unrecognised media type"``."""
    if isinstance(value, str) and _MEDIA_TYPE_RE.fullmatch(value):
        return value
    return "an unrecognised media type"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, strictly: UTF-8/16/32 text, no NaN/Infinity, bounded nesting."""
    try:
        document = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidResponse(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidResponse(f"{what} is not a JSON object")
    return document


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor. ``platform`` is None when absent or not a plain os/arch."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    attestation: bool = False


@dataclass(frozen=True)
class ImageIndex:
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor


def detect_media_type(content_type: str | None, document: Mapping[str, Any], what: str) -> str:
    """The manifest's media type: the ``Content-Type`` when it is one of the four, else the
    body's ``mediaType``, else its shape (OCI documents may omit ``mediaType``)."""
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidResponse(f"{what} has a non-string mediaType")
    if content_type in MANIFEST_TYPES:
        if declared is not None and declared != content_type:
            raise InvalidResponse(
                f"{what} was served as {content_type} but declares {printable_media_type(declared)}"
            )
        return content_type
    if (
        content_type in SCHEMA1_TYPES
        or declared in SCHEMA1_TYPES
        or document.get("schemaVersion") == 1
    ):
        raise InvalidResponse(
            f"{what} is a Docker schema 1 manifest, which is not supported (re-push the image)"
        )
    if declared is not None:
        if declared in MANIFEST_TYPES:
            return declared
        raise InvalidResponse(
            f"{what} is {printable_media_type(declared)}, not an image manifest or index"
        )
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document and "layers" in document:
        return OCI_MANIFEST
    raise InvalidResponse(f"{what} is neither an image manifest nor an image index")


def _descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidResponse(f"{what} has a descriptor that is not an object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.fullmatch(media_type):
        raise InvalidResponse(f"{what} has a descriptor without a valid mediaType")
    if not isinstance(digest, str) or not is_digest(digest):
        raise InvalidResponse(f"{what} has a descriptor without a valid sha256/sha512 digest")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < _MAX_SIZE:
        raise InvalidResponse(f"{what} has a descriptor without a valid size")
    annotations = value.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise InvalidResponse(f"{what} has descriptor annotations that are not an object")
    platform: Platform | None = None
    attestation = (annotations or {}).get(ATTESTATION_ANNOTATION) == "attestation-manifest"
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        os_name = raw_platform.get("os")
        arch = raw_platform.get("architecture")
        variant = raw_platform.get("variant")
        if variant == "":
            variant = None
        if (
            isinstance(os_name, str)
            and isinstance(arch, str)
            and (variant is None or isinstance(variant, str))
            and all(_PLATFORM_WORD_RE.fullmatch(w) for w in (os_name, arch, variant or "x"))
        ):
            if os_name == "unknown" and arch == "unknown":
                attestation = True
            else:
                platform = Platform(*normalize(os_name, arch, variant))
    elif raw_platform is not None:
        raise InvalidResponse(f"{what} has a descriptor platform that is not an object")
    return Descriptor(
        media_type=media_type, digest=digest, size=size, platform=platform, attestation=attestation
    )


def parse_manifest(
    media_type: str, document: Mapping[str, Any], what: str
) -> ImageIndex | ImageManifest:
    """Validate ``document`` as ``media_type`` (one of :data:`MANIFEST_TYPES`)."""
    if document.get("schemaVersion") != 2:
        raise InvalidResponse(f"{what} does not have schemaVersion 2")
    if media_type in INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise InvalidResponse(f"{what} is an index without a manifests list")
        if len(entries) > 1024:
            raise InvalidResponse(f"{what} lists more than 1024 manifests")
        return ImageIndex(tuple(_descriptor(e, what) for e in entries))
    if media_type in IMAGE_MANIFEST_TYPES:
        config = _descriptor(document.get("config"), what)
        if not isinstance(document.get("layers"), list):
            raise InvalidResponse(f"{what} is an image manifest without a layers list")
        if config.media_type not in CONFIG_TYPES:
            raise InvalidResponse(
                f"{what} is not a container image: its config is "
                f"{printable_media_type(config.media_type)}"
            )
        return ImageManifest(config)
    raise InvalidResponse(f"{what} has unsupported media type {printable_media_type(media_type)}")


def select_platform(index: ImageIndex, target: Platform, what: str) -> Descriptor:
    """The entry of ``index`` for ``target``.

    Attestation entries (``unknown/unknown`` or ``vnd.docker.reference.type:
    attestation-manifest``), entries of unknown media types and entries without a platform are
    ignored. With a variant configured only that variant matches; without one, an entry without
    a variant is preferred, then the first entry for the os/architecture.
    """
    candidates = [
        d
        for d in index.manifests
        if d.media_type in MANIFEST_TYPES
        and not d.attestation
        and d.platform is not None
        and d.platform.os == target.os
        and d.platform.architecture == target.architecture
    ]
    if target.variant is not None:
        candidates = [d for d in candidates if d.platform and d.platform.variant == target.variant]
    else:
        candidates.sort(key=lambda d: d.platform is not None and d.platform.variant is not None)
    if candidates:
        return candidates[0]
    offered = sorted(
        {
            str(d.platform)
            for d in index.manifests
            if d.platform is not None and not d.attestation and d.media_type in MANIFEST_TYPES
        }
    )
    listing = ", ".join(offered[:12]) if offered else "none"
    raise NoMatchingPlatform(
        f"{what} has no manifest for platform {target} (it offers: {listing}); "
        "set the registry platform if another one is meant"
    )
