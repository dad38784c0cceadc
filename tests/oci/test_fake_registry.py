"""The fake registry itself: loopback only, distribution-like Accept handling, uploads."""

from __future__ import annotations

import pytest

from hookd.testing.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    FakeRegistry,
    build_image,
    image_config,
    push_image,
)

from .conftest import loopback_session

CONFIGS = {
    "linux/amd64": image_config("linux/amd64", cmd=["a"]),
    "linux/arm64": image_config("linux/arm64", cmd=["b"]),
}


def test_only_loopback() -> None:
    with pytest.raises(ValueError):
        FakeRegistry(host="0.0.0.0")


def test_accept_header_gotchas_like_distribution(fake: FakeRegistry) -> None:
    fake.add_image("app", "index", CONFIGS)
    fake.add_image("app", "v2", {"linux/amd64": CONFIGS["linux/amd64"]}, kind="docker-v2")
    with loopback_session() as http:
        assert http.get(f"{fake.url}/v2/app/manifests/index").status_code == 404
        assert http.get(f"{fake.url}/v2/app/manifests/v2").status_code == 400
        answer = http.get(f"{fake.url}/v2/app/manifests/index", headers={"Accept": OCI_INDEX})
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == OCI_INDEX
        assert answer.headers["Docker-Content-Digest"].startswith("sha256:")
        head = http.head(f"{fake.url}/v2/app/manifests/v2", headers={"Accept": DOCKER_MANIFEST})
        assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("kind", ["oci-index", "docker-list", "oci-manifest", "docker-v2"])
def test_push_image_to_the_fake(fake: FakeRegistry, kind: str) -> None:
    configs = (
        CONFIGS if kind in ("oci-index", "docker-list") else {"linux/amd64": CONFIGS["linux/amd64"]}
    )
    digest = push_image(fake.url, "team/app", "v1", configs, kind=kind)  # type: ignore[arg-type]
    assert digest == build_image(configs, kind).digest  # type: ignore[arg-type]
    assert "POST" in {r.method for r in fake.requests}
    with loopback_session() as http:
        tags = http.get(f"{fake.url}/v2/team/app/tags/list").json()
    assert tags == {"name": "team/app", "tags": ["v1"]}


def test_bearer_mode_requires_a_token(fake: FakeRegistry) -> None:
    with FakeRegistry(auth="bearer") as locked, loopback_session() as http:
        answer = http.get(f"{locked.url}/v2/")
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith(f'Bearer realm="{locked.url}/token"')
        token = http.get(f"{locked.url}/token", params={"service": "fake-registry"}).json()["token"]
        assert http.get(f"{locked.url}/v2/", headers={"Authorization": f"Bearer {token}"}).ok


def test_fail_next_counts_down(fake: FakeRegistry) -> None:
    fake.fail_next(429, count=2, retry_after="3")
    with loopback_session() as http:
        statuses = [http.get(f"{fake.url}/v2/").status_code for _ in range(3)]
        assert statuses == [429, 429, 200]
