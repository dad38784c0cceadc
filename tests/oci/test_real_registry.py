"""Integration: Debian's docker-registry (distribution 2.8) on loopback, pushed to by hand and
read back by RegistryClient. Skipped where docker-registry is missing — a failure if CI=true."""

from __future__ import annotations

from typing import Any

import pytest

from hookd.http import DIRECT
from hookd.oci import ImageReference, NoMatchingPlatform, RegistrySettings, probe
from hookd.oci.imageconfig import config_platform
from hookd.testing.registry import (
    RealRegistry,
    canonical_json,
    image_config,
    push_image,
    sha256_digest,
)

from .conftest import ClientFactory

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("docker-registry")]

CONFIGS: dict[str, dict[str, Any]] = {
    "linux/amd64": image_config(
        "linux/amd64",
        cmd=["redis-server", "--protected-mode", "no"],
        entrypoint=["docker-entrypoint.sh"],
        env=["PATH=/usr/local/bin:/usr/bin", "REDIS_VERSION=7.2.4"],
        working_dir="/data",
        user="redis",
    ),
    "linux/arm64/v8": image_config("linux/arm64/v8", cmd=["arm64-server"], working_dir="/a"),
    "linux/arm/v7": image_config("linux/arm/v7", cmd=["armv7-server"], user="1000:1000"),
    "linux/s390x": image_config("linux/s390x", cmd=["s390x-server"]),
}


def _ref(registry: RealRegistry, name: str) -> ImageReference:
    return ImageReference.parse(f"{registry.host}/{name}")


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm64", "linux/arm64/v8"),
    ],
)
def test_oci_index_with_attestation(
    real_registry: RealRegistry, make_client: ClientFactory, platform: str, expected: str
) -> None:
    top = push_image(real_registry.url, "hookd/redis", "7-oci", CONFIGS, attestation=True)
    client = make_client(real_registry.host, platform=platform)
    fetched = client.fetch_config(_ref(real_registry, "hookd/redis:7-oci"))
    assert fetched.config == CONFIGS[expected]
    assert fetched.config_digest == sha256_digest(canonical_json(CONFIGS[expected]))
    assert fetched.source == f"registry:{real_registry.host}"
    pinned = make_client(real_registry.host, platform=platform).fetch_config(
        _ref(real_registry, f"hookd/redis@{top}")
    )
    assert pinned.config == CONFIGS[expected]


def test_docker_v2_manifest_and_manifest_list(
    real_registry: RealRegistry, make_client: ClientFactory
) -> None:
    single = {"linux/amd64": CONFIGS["linux/amd64"]}
    top = push_image(real_registry.url, "hookd/redis", "7-v2", single, kind="docker-v2")
    fetched = make_client(real_registry.host).fetch_config(_ref(real_registry, "hookd/redis:7-v2"))
    assert fetched.config == CONFIGS["linux/amd64"]
    assert fetched.manifest_digest == top
    two = {k: CONFIGS[k] for k in ("linux/amd64", "linux/arm64/v8")}
    push_image(real_registry.url, "hookd/redis", "7-list", two, kind="docker-list")
    for platform, expected in (
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64/v8", "linux/arm64/v8"),
    ):
        client = make_client(real_registry.host, platform=platform)
        assert (
            client.fetch_config(_ref(real_registry, "hookd/redis:7-list")).config
            == CONFIGS[expected]
        )
    with pytest.raises(NoMatchingPlatform):
        make_client(real_registry.host, platform="linux/s390x").fetch_config(
            _ref(real_registry, "hookd/redis:7-list")
        )


def test_oci_manifest_and_probe(real_registry: RealRegistry, make_client: ClientFactory) -> None:
    single = {"linux/s390x": CONFIGS["linux/s390x"]}
    push_image(real_registry.url, "hookd/tiny", "oci", single, kind="oci-manifest")
    fetched = make_client(real_registry.host).fetch_config(_ref(real_registry, "hookd/tiny:oci"))
    assert fetched.config == CONFIGS["linux/s390x"]  # a single manifest is what the tag is
    assert config_platform(fetched.config) == "linux/s390x"
    settings = RegistrySettings(plain_http_registries=frozenset({real_registry.host}))
    ok, message = probe(settings, real_registry.host, proxies=DIRECT)
    assert ok, message
    assert "200" in message
