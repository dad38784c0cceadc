"""Where a Docker image's START_SCRIPT comes from when the registry is not there.

An image fixed from its real config carries that config's digest (HOOKD_OCI_CONFIG): an
outage, or the image gone from the registry, never downgrades it to the /one_entrypoint.sh
fallback (which runs the app as root in /, ignoring User and WorkingDir). The fallback is
for images never fixed from a config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from handlers.errors import TransientError
from handlers.facts import ImageFacts
from handlers.model import OciProcessFacts, OciUnavailable
from handlers.start_script import StartScriptOptions
from handlers.template import Template
from hookd.oci import RegistryClient, RegistrySettings
from hookd.oci_facts import FALLBACK_SOURCE, OciResolver
from hookd.testing.registry import FakeRegistry, seeded_registry

PATH = "docker://nginx?size=2048&filesystem=ext4&format=raw"


def image(**attributes: str) -> ImageFacts:
    return ImageFacts(id=7, name="nginx", uid=0, uname="oneadmin", type=0, state=1,
                      datastore_id=101, datastore="images", path=PATH, source="x",
                      template=Template.of(*attributes.items()))


def resolver(registry: FakeRegistry, cache: Path) -> OciResolver:
    settings = RegistrySettings(mirrors={"docker.io": [f"http://{registry.host}"]},
                                plain_http_registries=frozenset([registry.host]),
                                cache_dir=str(cache), request_deadline=5.0, read_timeout=2.0)
    return OciResolver(RegistryClient(settings), StartScriptOptions(), fallback=True,
                       version=lambda: (6, 8, 3))


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = seeded_registry()
    yield reg
    reg.stop()


def fixed_once(registry: FakeRegistry, cache: Path) -> tuple[OciProcessFacts, ImageFacts]:
    """The first fix, with the registry up: what hookd records on the image."""
    facts = resolver(registry, cache)(image(), False)
    assert isinstance(facts, OciProcessFacts) and facts.config_digest
    return facts, image(HOOKD_OCI_CONFIG=facts.config_digest,
                        HOOKD_SOURCE="registry:docker.io")


def test_an_image_never_fixed_falls_back_only_on_the_final_attempt(
        registry: FakeRegistry, tmp_path: Path) -> None:
    registry.down()
    fresh = resolver(registry, tmp_path / "cache")
    with pytest.raises(TransientError):
        fresh(image(), False)
    facts = fresh(image(), True)
    assert isinstance(facts, OciProcessFacts) and facts.source == FALLBACK_SOURCE


def test_an_outage_serves_the_config_the_image_was_fixed_from(
        registry: FakeRegistry, tmp_path: Path) -> None:
    first, fixed = fixed_once(registry, tmp_path / "cache")
    registry.down()
    again = resolver(registry, tmp_path / "cache")  # a restart: only the disk cache is left
    for final in (False, True):
        facts = again(fixed, final)
        assert isinstance(facts, OciProcessFacts)
        assert (facts.script, facts.config_digest, facts.source) == (
            first.script, first.config_digest, "registry:docker.io")


def test_without_the_cache_an_outage_keeps_what_is_installed(
        registry: FakeRegistry, tmp_path: Path) -> None:
    _first, fixed = fixed_once(registry, tmp_path / "cache")
    registry.down()
    new_machine = resolver(registry, tmp_path / "other-cache")
    with pytest.raises(TransientError):
        new_machine(fixed, False)  # retried with backoff first
    facts = new_machine(fixed, True)
    assert isinstance(facts, OciUnavailable)
    assert facts.config_digest == fixed.template.get("HOOKD_OCI_CONFIG")
    assert "registry unreachable" in facts.reason


def test_an_image_gone_from_the_registry_is_not_downgraded(
        registry: FakeRegistry, tmp_path: Path) -> None:
    first, fixed = fixed_once(registry, tmp_path / "cache")
    # Pulled from the fake registry itself: its 404 is the only answer there is.
    gone = replace(fixed, path=f"docker://{registry.host}/library/deleted-upstream?size=2048")
    facts = resolver(registry, tmp_path / "cache")(gone, False)
    assert isinstance(facts, OciProcessFacts) and facts.script == first.script
    facts = resolver(registry, tmp_path / "empty")(gone, False)
    assert isinstance(facts, OciUnavailable)
    never_fixed = replace(gone, template=Template())
    facts = resolver(registry, tmp_path / "empty")(never_fixed, False)
    assert isinstance(facts, OciProcessFacts) and facts.source == FALLBACK_SOURCE
