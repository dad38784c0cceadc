"""The image config blob and the value :meth:`RegistryClient.fetch_config` returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hookd.oci.errors import InvalidResponse
from hookd.oci.manifest import load_object
from hookd.oci.platforms import Platform

_FIELD_TYPES: tuple[tuple[tuple[str, ...], Callable[[object], bool], str], ...] = (
    (("Cmd", "Entrypoint", "Env", "Shell", "OnBuild"),
     lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
     "a list of strings"),
    (("User", "WorkingDir", "StopSignal"), lambda v: isinstance(v, str), "a string"),
    (("ExposedPorts", "Volumes", "Labels", "Healthcheck"), lambda v: isinstance(v, dict),
     "an object"),
)
_EXEC_FIELDS = ("Cmd", "Entrypoint", "Env", "User", "WorkingDir")


@dataclass(frozen=True)
class FetchedConfig:
    """An image config as read from a registry, a mirror, the cache or the local engine.

    ``config`` is the config blob's JSON object (``config.Cmd``, ``config.Entrypoint``,
    ``config.Env``, ``config.WorkingDir``, ``config.User``, … live under its ``"config"`` key).
    ``config_digest`` is the blob's digest; ``manifest_digest`` that of the platform's image
    manifest (None when the engine could not tell). ``source`` is ``registry:<host>``,
    ``mirror:<host>``, ``cache`` or ``engine:<socket>``.

    ``config`` is a plain ``dict`` (``handlers.start_script.parse_oci_config`` wants one),
    freshly parsed for every call: changing it cannot affect the cache or other callers.
    """

    config: Mapping[str, Any]
    config_digest: str
    manifest_digest: str | None
    source: str


def validate_config(document: dict[str, Any], what: str) -> dict[str, Any]:
    """Type-check the fields a start script is built from; return ``document``.

    ``config`` must be an object when present; ``Cmd``/``Entrypoint``/``Env`` lists of strings
    (or null); ``User``/``WorkingDir``/``StopSignal`` strings; the exec fields free of NUL.
    """
    section = document.get("config")
    if section is None:
        return document
    if not isinstance(section, dict):
        raise InvalidResponse(f"{what}: the config section is not a JSON object")
    for names, valid, kind in _FIELD_TYPES:
        for name in names:
            value = section.get(name)
            if value is not None and not valid(value):
                raise InvalidResponse(f"{what}: config.{name} is not {kind}")
    for name in _EXEC_FIELDS:
        value = section.get(name)
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and "\x00" in item for item in items):
            raise InvalidResponse(f"{what}: config.{name} contains a NUL character")
    return document


def parse_config_blob(data: bytes, what: str) -> dict[str, Any]:
    """Parse and validate a config blob (strict JSON object)."""
    return validate_config(load_object(data, what), what)


def config_platform(document: Mapping[str, Any]) -> str | None:
    """``os/architecture[/variant]`` stated by a config, normalised, if well-formed."""
    os_name = document.get("os")
    arch = document.get("architecture")
    variant = document.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    text = f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")
    try:
        return str(Platform.parse(text))
    except ValueError:
        return None
