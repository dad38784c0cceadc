"""RegistrySettings and Credentials validation and normalisation."""

from __future__ import annotations

from typing import Any

import pytest

from hookd.config import ConfigError
from hookd.oci import DOCKER_HUB_API_HOST, Credentials, Platform, RegistrySettings


def test_defaults_are_safe() -> None:
    settings = RegistrySettings()
    assert settings.platform == "linux/amd64"
    assert settings.verify_tls is True
    assert settings.plain_http_registries == frozenset()
    assert settings.scheme_for("registry.example") == "https"
    assert settings.target_platform == Platform("linux", "amd64", None)


def test_hosts_are_normalised() -> None:
    settings = RegistrySettings(
        plain_http_registries=frozenset({"LocalHost:5000"}),
        mirrors={"docker.io": ["https://Mirror.Example", "localhost:5000"]},
        credentials={"index.docker.io": Credentials(username="u", password="p")},
    )
    assert settings.plain_http_registries == {"localhost:5000"}
    assert settings.mirrors == {DOCKER_HUB_API_HOST: ("mirror.example", "localhost:5000")}
    assert set(settings.credentials) == {DOCKER_HUB_API_HOST}
    assert settings.scheme_for("localhost:5000") == "http"


@pytest.mark.parametrize(
    "fields",
    [
        {"platform": "amd64"},
        {"platform": "linux/amd64/v1/extra"},
        {"request_deadline": 0},
        {"read_timeout": -1},
        {"max_config_bytes": 10},
        {"max_redirects": 99},
        {"tag_ttl": -1},
        {"verify_tls": ""},
        {"plain_http_registries": "localhost:5000"},
        {"plain_http_registries": frozenset({"bad host"})},
        {"mirrors": {"docker.io": "mirror.example"}},
        {"mirrors": {"docker.io": ["ftp://mirror.example"]}},
        {"mirrors": {"docker.io": ["http://mirror.example"]}},  # http but not allowed
        {"credentials": {"not a host": Credentials(username="u", password="p")}},
    ],
)
def test_bad_settings_are_config_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RegistrySettings(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"username": "u"},
        {"password": "p"},
        {"username": "a:b", "password": "p"},
        {"username": "u", "password": "line\nbreak"},
    ],
)
def test_bad_credentials(fields: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Credentials(**fields)


def test_secrets_stay_out_of_repr() -> None:
    settings = RegistrySettings(
        credentials={
            "a.example": Credentials(username="alice", password="hunter2-pw"),
        }
    )
    text = repr(settings)
    assert "alice" in text
    assert "hunter2-pw" not in text
