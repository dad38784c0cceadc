"""The image config blob and the value :meth:`RegistryClient.fetch_config` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookd.oci.errors import InvalidResponse
from hookd.oci.manifest import load_object
from hookd.oci.platforms import Platform

_STRING_LISTS = ("Cmd", "Entrypoint", "Env", "Shell", "OnBuild")
_STRINGS = ("User", "WorkingDir", "StopSignal")
_OBJECTS = ("ExposedPorts", "Volumes", "Labels", "Healthcheck")
_EXEC_FIELDS = ("Cmd", "Entrypoint", "Env", "User", "WorkingDir")


@dataclass(frozen=True)
class FetchedConfig:
    """An image config as read from a registry, a mirror, the cache or the local engine.

    ``config`` is the config blob's JSON object (``config.Cmd``, ``config.Entrypoint``,
    ``config.Env``, ``config.WorkingDir``, ``config.User``, … live under its ``"config"`` key).
    ``config_digest`` is the blob's digest; ``manifest_digest`` that of the platform's image
    manifest (None when the engine could not tell). ``source`` is ``registry:<host>``,
    ``mirror:<host>``, ``cache`` or ``engine:<socket>``; ``platform`` is the config's own
    ``os/architecture[/variant]`` when it states one (normalised).

    ``config`` is a plain ``dict`` (``handlers.start_script.parse_oci_config`` wants one),
    freshly parsed for every call: changing it cannot affect the cache or other callers.
    """

    config: Mapping[str, Any]
    config_digest: str
    manifest_digest: str | None
    source: str

    @property
    def platform(self) -> str | None:
        return config_platform(self.config)


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
    for name in _STRING_LISTS:
        value = section.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise InvalidResponse(f"{what}: config.{name} is not a list of strings")
    for name in _STRINGS:
        value = section.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidResponse(f"{what}: config.{name} is not a string")
    for name in _OBJECTS:
        value = section.get(name)
        if value is not None and not isinstance(value, dict):
            raise InvalidResponse(f"{what}: config.{name} is not an object")
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
