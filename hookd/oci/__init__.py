"""Reading image configs from container registries: the only code in hookd that talks to them.

Typical use::

    ref = ImageReference.from_one_path(image_path, url_args)
    with RegistryClient(RegistrySettings(cache_dir="/var/cache/hookd/oci")) as client:
        fetched = client.fetch_config(ref)
    cmd = fetched.config.get("config", {}).get("Cmd")

Every error raised is a :class:`handlers.errors.TransientError` or
:class:`handlers.errors.PermanentError` (see :mod:`hookd.oci.errors`).
"""

from hookd.oci.cache import ContentCache
from hookd.oci.docker_engine import EngineClient
from hookd.oci.errors import (
    AuthenticationFailed,
    ImageNotFound,
    IntegrityError,
    InvalidReference,
    InvalidResponse,
    NoMatchingPlatform,
    RedirectRefused,
    RegistryUnavailable,
    ResponseTooLarge,
    TLSFailure,
    UnexpectedStatus,
)
from hookd.oci.imageconfig import FetchedConfig
from hookd.oci.platforms import Platform
from hookd.oci.reference import DOCKER_HUB_API_HOST, ImageReference
from hookd.oci.registry import RegistryClient, probe
from hookd.oci.settings import Credentials, RegistrySettings

__all__ = [
    "DOCKER_HUB_API_HOST",
    "AuthenticationFailed",
    "ContentCache",
    "Credentials",
    "EngineClient",
    "FetchedConfig",
    "ImageNotFound",
    "ImageReference",
    "IntegrityError",
    "InvalidReference",
    "InvalidResponse",
    "NoMatchingPlatform",
    "Platform",
    "RedirectRefused",
    "RegistryClient",
    "RegistrySettings",
    "RegistryUnavailable",
    "ResponseTooLarge",
    "TLSFailure",
    "UnexpectedStatus",
    "probe",
]
