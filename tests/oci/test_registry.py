"""RegistryClient against FakeRegistry: auth, manifest kinds, platforms, integrity, limits,
redirects, deadlines, error classification, mirrors and probe."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from handlers.errors import PermanentError, TransientError
from hookd.http import DIRECT
from hookd.oci import (
    AuthenticationFailed,
    Credentials,
    ImageNotFound,
    ImageReference,
    IntegrityError,
    InvalidResponse,
    NoMatchingPlatform,
    RedirectRefused,
    RegistryClient,
    RegistrySettings,
    RegistryUnavailable,
    ResponseTooLarge,
    TLSFailure,
    UnexpectedStatus,
    probe,
)
from hookd.oci.imageconfig import config_platform
from hookd.testing.registry import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    FakeRegistry,
    build_image,
    canonical_json,
    image_config,
    sha256_digest,
)

from .conftest import ClientFactory, FakeClock

AMD64 = image_config(
    "linux/amd64",
    cmd=["nginx", "-g", "daemon off;"],
    entrypoint=["/docker-entrypoint.sh"],
    env=["PATH=/usr/local/sbin:/usr/bin", "NGINX_VERSION=1.25.3"],
    working_dir="/srv",
    user="101:101",
)
ARM64 = image_config("linux/arm64/v8", cmd=["arm64"])
ARMV7 = image_config("linux/arm/v7", cmd=["armv7"])
ARMV6 = image_config("linux/arm/v6", cmd=["armv6"])
MULTI = {
    "linux/arm/v6": ARMV6,
    "linux/amd64": AMD64,
    "linux/arm64/v8": ARM64,
    "linux/arm/v7": ARMV7,
}
ALL_KINDS = ("oci-index", "docker-list", "oci-manifest", "docker-v2")


def ref(registry: FakeRegistry, name: str) -> ImageReference:
    return ImageReference.parse(f"{registry.host}/{name}")


def token_requests(registry: FakeRegistry) -> int:
    return registry.paths("GET").count("/token")


def only(configs: Mapping[str, Mapping[str, Any]], *platforms: str) -> dict[str, Any]:
    return {p: configs[p] for p in platforms}


# -- manifest kinds and platforms ------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_all_four_manifest_kinds(fake: FakeRegistry, make_client: ClientFactory, kind: Any) -> None:
    configs = MULTI if kind in ("oci-index", "docker-list") else only(MULTI, "linux/amd64")
    top = fake.add_image("library/nginx", "1.25", configs, kind=kind)
    fetched = make_client(fake.host).fetch_config(ref(fake, "library/nginx:1.25"))
    assert fetched.config == AMD64
    assert fetched.config_digest == sha256_digest(canonical_json(AMD64))
    assert fetched.source == f"registry:{fake.host}"
    assert config_platform(fetched.config) == "linux/amd64"
    if kind in ("oci-manifest", "docker-v2"):
        assert fetched.manifest_digest == top
    else:
        assert fetched.manifest_digest != top
    # Every manifest request listed all four media types.
    manifest_requests = [r for r in fake.requests if "/manifests/" in r.path]
    assert manifest_requests
    for request in manifest_requests:
        accept = request.headers["accept"]
        for media_type in (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST):
            assert media_type in accept
        assert "application/vnd.docker.distribution.manifest.list.v2+json" in accept


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", AMD64),
        ("linux/arm64", ARM64),
        ("linux/arm64/v8", ARM64),
        ("linux/aarch64", ARM64),
        ("linux/arm/v7", ARMV7),
        ("linux/arm", ARMV7),  # arm without a variant means v7
        ("linux/arm/v6", ARMV6),
        ("linux/armel", ARMV6),
    ],
)
def test_platform_and_variant_selection(
    fake: FakeRegistry, make_client: ClientFactory, platform: str, expected: dict[str, Any]
) -> None:
    fake.add_image("app", "multi", MULTI, kind="oci-index", attestation=True)
    fake.add_image("app", "list", MULTI, kind="docker-list")
    client = make_client(fake.host, platform=platform)
    assert client.fetch_config(ref(fake, "app:multi")).config == expected
    assert client.fetch_config(ref(fake, "app:list")).config == expected


def test_attestation_unknown_types_and_platformless_entries_are_skipped(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    built = build_image(only(MULTI, "linux/amd64", "linux/arm64/v8"), attestation=True)
    for data in built.blobs.values():
        fake.add_blob("app", data)
    for _, media_type, body in built.manifests:
        fake.add_manifest("app", None, body, media_type)
    index = json.loads(built.top)
    real_amd64 = index["manifests"][0]
    [attestation] = [e for e in index["manifests"] if e["platform"]["os"] == "unknown"]
    # Decoys in front of the real entry, each claiming linux/amd64 one way or another.
    index["manifests"] = [
        {**attestation, "platform": {"os": "linux", "architecture": "amd64"}},
        {
            "mediaType": "application/vnd.example.future+json",
            "digest": attestation["digest"],
            "size": attestation["size"],
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {"mediaType": OCI_MANIFEST, "digest": attestation["digest"], "size": attestation["size"]},
        *index["manifests"],
    ]
    fake.add_manifest("app", "decoys", canonical_json(index), OCI_INDEX)
    fetched = make_client(fake.host).fetch_config(ref(fake, "app:decoys"))
    assert fetched.config == AMD64
    assert fetched.manifest_digest == real_amd64["digest"]
    assert f"/v2/app/manifests/{attestation['digest']}" not in fake.paths()


def test_no_matching_platform_is_permanent_and_names_the_offer(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    fake.add_image("app", "v1", only(MULTI, "linux/arm64/v8", "linux/arm/v7"), attestation=True)
    with pytest.raises(NoMatchingPlatform) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert isinstance(caught.value, PermanentError)
    assert "linux/amd64" in caught.value.reason
    assert "linux/arm64" in caught.value.reason
    assert "unknown" not in caught.value.reason  # the attestation is not offered


def test_pull_by_digest(fake: FakeRegistry, make_client: ClientFactory) -> None:
    top = fake.add_image("app", "v1", MULTI)
    fetched = make_client(fake.host).fetch_config(ref(fake, f"app@{top}"))
    assert fetched.config == AMD64
    assert "HEAD" not in {r.method for r in fake.requests}  # nothing to resolve


# -- authentication --------------------------------------------------------------------------


def test_anonymous_bearer_token_flow(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer") as fake:
        fake.add_image("library/nginx", "latest", MULTI)
        fetched = make_client(fake.host).fetch_config(ref(fake, "library/nginx"))
        assert fetched.config == AMD64
        [token_request] = [r for r in fake.requests if r.path.startswith("/token")]
        assert "service=fake-registry" in token_request.path
        assert "scope=repository%3Alibrary%2Fnginx%3Apull" in token_request.path
        assert "authorization" not in token_request.headers  # anonymous
        after = fake.requests[fake.requests.index(token_request) + 1 :]
        assert after
        assert all(r.headers["authorization"].startswith("Bearer ") for r in after)


def test_scope_with_commas_is_passed_back_verbatim(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer", challenge_actions="pull,push") as fake:
        fake.add_image("app", "v1", MULTI)
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
        [token_request] = [r for r in fake.requests if r.path.startswith("/token")]
        assert "scope=repository%3Aapp%3Apull%2Cpush" in token_request.path


@pytest.mark.parametrize("field", ["token", "access_token"])
def test_token_or_access_token(make_client: ClientFactory, field: Any) -> None:
    with FakeRegistry(auth="bearer", token_field=field) as fake:
        fake.add_image("app", "v1", MULTI)
        assert make_client(fake.host).fetch_config(ref(fake, "app:v1")).config == AMD64


def test_bearer_with_credentials_logs_in_at_the_token_endpoint(
    make_client: ClientFactory,
) -> None:
    with FakeRegistry(auth="bearer", anonymous_tokens=False) as fake:
        fake.add_image("app", "v1", MULTI)
        with pytest.raises(AuthenticationFailed) as anonymous:
            make_client(fake.host).fetch_config(ref(fake, "app:v1"))
        assert "anonymous" in anonymous.value.reason
        login = Credentials(username=fake.username, password=fake.password)
        client = make_client(fake.host, credentials={fake.host: login})
        assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
        token_request = [r for r in fake.requests if r.path.startswith("/token")][-1]
        assert token_request.headers["authorization"].startswith("Basic ")


def test_wrong_password_at_token_endpoint_is_permanent_and_secret_free(
    make_client: ClientFactory,
) -> None:
    with FakeRegistry(auth="bearer", anonymous_tokens=False) as fake:
        fake.add_image("app", "v1", MULTI)
        bad = Credentials(username=fake.username, password="wrong-Pa55word")
        with pytest.raises(AuthenticationFailed) as caught:
            make_client(fake.host, credentials={fake.host: bad}).fetch_config(ref(fake, "app:v1"))
        assert "wrong-Pa55word" not in str(caught.value)
        assert "wrong-Pa55word" not in repr(bad)


def test_basic_auth(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="basic") as fake:
        fake.add_image("app", "v1", MULTI)
        with pytest.raises(AuthenticationFailed) as missing:
            make_client(fake.host).fetch_config(ref(fake, "app:v1"))
        assert "configure credentials" in missing.value.reason
        good = Credentials(username=fake.username, password=fake.password)
        client = make_client(fake.host, credentials={fake.host: good})
        assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
        bad = Credentials(username=fake.username, password="n0t-the-password")
        with pytest.raises(AuthenticationFailed) as refused:
            make_client(fake.host, credentials={fake.host: bad}).fetch_config(ref(fake, "app:v1"))
        assert refused.value.code == 401
        assert "n0t-the-password" not in str(refused.value)


def test_token_reused_until_expiry(make_client: ClientFactory, clock: FakeClock) -> None:
    with FakeRegistry(auth="bearer", token_ttl=60) as fake:
        for tag in ("a", "b", "c"):
            fake.add_image("app", tag, {"linux/amd64": image_config("linux/amd64", cmd=[tag])})
        client = make_client(fake.host)
        client.fetch_config(ref(fake, "app:a"))
        assert token_requests(fake) == 1
        fake.clear_log()
        clock.advance(30)
        assert client.fetch_config(ref(fake, "app:b")).config["config"]["Cmd"] == ["b"]
        assert token_requests(fake) == 0
        assert len(fake.paths("HEAD")) == 1  # the cached token was sent up front: no 401 round
        assert all(r.headers["authorization"].startswith("Bearer ") for r in fake.requests)
        clock.advance(31)  # 61 s after issue
        assert client.fetch_config(ref(fake, "app:c")).config["config"]["Cmd"] == ["c"]
        assert token_requests(fake) == 1


def test_token_lifetime_defaults_to_60_seconds(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    with FakeRegistry(auth="bearer", token_ttl=None) as fake:
        for tag in ("a", "b", "c"):
            fake.add_image("app", tag, {"linux/amd64": image_config("linux/amd64", cmd=[tag])})
        client = make_client(fake.host)
        client.fetch_config(ref(fake, "app:a"))
        clock.advance(30)
        client.fetch_config(ref(fake, "app:b"))
        assert token_requests(fake) == 1
        clock.advance(31)
        client.fetch_config(ref(fake, "app:c"))
        assert token_requests(fake) == 2


def test_revoked_token_is_renewed_once(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer") as fake:
        for tag in ("a", "b"):
            fake.add_image("app", tag, {"linux/amd64": image_config("linux/amd64", cmd=[tag])})
        client = make_client(fake.host)
        client.fetch_config(ref(fake, "app:a"))
        fake.revoke_tokens()
        assert client.fetch_config(ref(fake, "app:b")).config["config"]["Cmd"] == ["b"]
        assert token_requests(fake) == 2


def test_insecure_token_realm_is_refused(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer") as fake:
        fake.realm_override = fake.url.replace("127.0.0.1", "localhost") + "/token"
        fake.add_image("app", "v1", MULTI)
        with pytest.raises(RedirectRefused) as caught:
            make_client(fake.host).fetch_config(ref(fake, "app:v1"))
        assert "token realm" in caught.value.reason
        assert token_requests(fake) == 0


def test_no_credentials_or_tokens_in_logs(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer", anonymous_tokens=False) as fake:
        fake.add_image("app", "v1", MULTI)
        login = Credentials(username=fake.username, password=fake.password)
        with structlog.testing.capture_logs() as logs:
            make_client(fake.host, credentials={fake.host: login}).fetch_config(ref(fake, "app:v1"))
        assert logs
        assert {entry["log_level"] for entry in logs} == {"debug"}
        tokens = {
            r.headers["authorization"].split(" ", 1)[1]
            for r in fake.requests
            if "authorization" in r.headers
        }
        text = repr(logs)
        for secret in (*tokens, fake.password):
            assert secret not in text
        assert "Authorization" not in text and "Bearer" not in text and "Basic" not in text


# -- integrity and limits --------------------------------------------------------------------


def test_wrong_docker_content_digest_is_permanent(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    fake.add_image("app", "v1", MULTI, kind="docker-list")
    fake.faults.manifest_digest_header = "wrong"
    with pytest.raises(IntegrityError) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert isinstance(caught.value, PermanentError)


def test_absent_docker_content_digest_is_computed(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    top = fake.add_image("app", "v1", only(MULTI, "linux/amd64"), kind="oci-manifest")
    fake.faults.manifest_digest_header = "absent"
    fetched = make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert fetched.manifest_digest == top
    assert fake.paths() == ["/v2/app/manifests/v1", "/v2/app/manifests/v1", fake.paths()[-1]]
    assert [r.method for r in fake.requests] == ["HEAD", "GET", "GET"]


def test_a_digest_is_pulled_whatever_the_tag(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    top = fake.add_image("app", "v1", MULTI)
    fetched = make_client(fake.host).fetch_config(ref(fake, f"app:other@{top}"))
    assert fetched.manifest_digest != top  # the platform's manifest, from the index
    assert fake.paths()[0] == f"/v2/app/manifests/{top}"
    assert "/v2/app/manifests/other" not in fake.paths()


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_tampered_manifest_is_detected(
    fake: FakeRegistry, make_client: ClientFactory, by: str
) -> None:
    top = fake.add_image("app", "v1", MULTI)
    fake.faults.tamper_manifests = True
    with pytest.raises(IntegrityError):
        make_client(fake.host).fetch_config(ref(fake, "app:v1" if by == "tag" else f"app@{top}"))


def test_tampered_manifest_without_digest_header_pulled_by_digest(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    top = fake.add_image("app", "v1", MULTI)
    fake.faults.tamper_manifests = True
    fake.faults.manifest_digest_header = "absent"
    with pytest.raises(IntegrityError) as caught:
        make_client(fake.host).fetch_config(ref(fake, f"app@{top}"))
    assert top in caught.value.reason


def test_tampered_config_blob_is_detected(fake: FakeRegistry, make_client: ClientFactory) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.faults.tamper_blobs = True
    with pytest.raises(IntegrityError) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert "does not match its digest" in caught.value.reason


@pytest.mark.parametrize("with_length", [False, True])
def test_oversized_blob_is_cut_off(
    fake: FakeRegistry, make_client: ClientFactory, with_length: bool
) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.faults.oversize_blob_bytes = 256 * 1024 * 1024
    fake.faults.oversize_with_length = with_length
    started = time.monotonic()
    with pytest.raises(ResponseTooLarge) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert isinstance(caught.value, PermanentError)
    assert time.monotonic() - started < 20  # did not read 256 MiB


def test_config_larger_than_the_cap_is_not_downloaded(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    big = image_config("linux/amd64", cmd=["x"], labels={"filler": "y" * 4000})
    fake.add_image("app", "v1", {"linux/amd64": big})
    with pytest.raises(ResponseTooLarge) as caught:
        make_client(fake.host, max_config_bytes=2048).fetch_config(ref(fake, "app:v1"))
    assert "max_config_bytes" in caught.value.reason
    assert not [p for p in fake.paths() if "/blobs/" in p]


def test_manifest_larger_than_the_cap(fake: FakeRegistry, make_client: ClientFactory) -> None:
    configs = {f"linux/arch{i}": image_config(f"linux/arch{i}") for i in range(12)}
    configs["linux/amd64"] = AMD64
    fake.add_image("app", "v1", configs)
    fake.faults.manifest_digest_header = "absent"  # so the index itself is downloaded by tag
    with pytest.raises(ResponseTooLarge):
        make_client(fake.host, max_manifest_bytes=1024).fetch_config(ref(fake, "app:v1"))


# -- malformed content -----------------------------------------------------------------------


def _image_with_config_bytes(fake: FakeRegistry, repository: str, tag: str, data: bytes) -> None:
    fake.add_blob(repository, data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(data), "size": len(data)},
        "layers": [],
    }
    fake.add_manifest(repository, tag, canonical_json(manifest), OCI_MANIFEST)


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b'["a list"]',
        b'{"config": {"Cmd": NaN}}',
        b'{"config": {"Cmd": "nginx -g daemon off;"}}',
        b'{"config": {"Env": [1, 2]}}',
        b'{"config": {"User": 0}}',
        b'{"config": {"Entrypoint": ["/bin/sh\\u0000"]}}',
        b'{"config": []}',
        b"[" * 100000 + b"]" * 100000,
    ],
)
def test_bad_config_json_is_permanent(
    fake: FakeRegistry, make_client: ClientFactory, data: bytes
) -> None:
    _image_with_config_bytes(fake, "app", "bad", data)
    with pytest.raises(InvalidResponse) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:bad"))
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (b"{not json", OCI_MANIFEST),
        (
            b'{"schemaVersion": 2, "mediaType": "%s", "manifests": "x"}' % OCI_INDEX.encode(),
            OCI_INDEX,
        ),
        (
            b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(),
            OCI_MANIFEST,
        ),
        (
            b'{"schemaVersion": 2, "config": {"mediaType": '
            b'"application/vnd.cncf.helm.config.v1+json", "digest": "sha256:'
            + b"0" * 64
            + b'", "size": 2}, "layers": []}',
            OCI_MANIFEST,
        ),
        (
            b'{"schemaVersion": 2, "manifests": '
            b'[{"mediaType": "x/y", "digest": "md5:00", "size": 1}]}',
            OCI_INDEX,
        ),
    ],
)
def test_bad_manifests_are_permanent(
    fake: FakeRegistry, make_client: ClientFactory, body: bytes, media_type: str
) -> None:
    fake.add_manifest("app", "bad", body, media_type)
    with pytest.raises(InvalidResponse) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:bad"))
    assert isinstance(caught.value, PermanentError)


def test_schema1_manifest_is_refused(fake: FakeRegistry, make_client: ClientFactory) -> None:
    fake.add_manifest("app", "old", b'{"schemaVersion": 1, "fsLayers": []}', DOCKER_MANIFEST)
    fake.faults.manifest_content_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    with pytest.raises(InvalidResponse) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:old"))
    assert "schema 1" in caught.value.reason


@pytest.mark.parametrize("content_type", ["", "application/json", "text/plain; charset=utf-8"])
def test_content_type_falls_back_to_body_media_type(
    fake: FakeRegistry, make_client: ClientFactory, content_type: str
) -> None:
    fake.add_image("app", "v1", MULTI, kind="docker-list")
    fake.faults.manifest_content_type = content_type
    assert make_client(fake.host).fetch_config(ref(fake, "app:v1")).config == AMD64


def test_content_type_contradicting_the_body_is_rejected(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    fake.add_image("app", "v1", MULTI, kind="docker-list")
    fake.faults.manifest_content_type = OCI_MANIFEST
    with pytest.raises(InvalidResponse):
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))


def test_head_not_allowed_falls_back_to_get(fake: FakeRegistry, make_client: ClientFactory) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.faults.head_not_allowed = True
    assert make_client(fake.host).fetch_config(ref(fake, "app:v1")).config == AMD64
    assert [r.method for r in fake.requests][:2] == ["HEAD", "GET"]


# -- redirects -------------------------------------------------------------------------------


def test_redirect_loop_is_permanent(fake: FakeRegistry, make_client: ClientFactory) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.faults.redirect_loop = True
    with pytest.raises(RedirectRefused) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert "loop" in caught.value.reason
    assert fake.paths().count("/loop/1") == 1


def test_cross_host_redirect_drops_authorization(make_client: ClientFactory) -> None:
    with FakeRegistry(auth="bearer") as origin, FakeRegistry() as storage:
        origin.add_image("app", "v1", MULTI)
        storage.add_image("app", "v1", MULTI)
        origin.faults.redirect_blobs_to = storage.url
        client = make_client(origin.host, storage.host)
        assert client.fetch_config(ref(origin, "app:v1")).config == AMD64
        [blob_request] = storage.requests
        assert "/blobs/sha256:" in blob_request.path
        assert "authorization" not in blob_request.headers
        redirected = [r for r in origin.requests if "/blobs/" in r.path]
        assert redirected
        assert redirected[-1].headers["authorization"].startswith("Bearer ")


def test_redirect_to_a_plain_http_host_not_allowed(make_client: ClientFactory) -> None:
    with FakeRegistry() as origin, FakeRegistry() as storage:
        origin.add_image("app", "v1", MULTI)
        origin.faults.redirect_blobs_to = storage.url
        with pytest.raises(RedirectRefused) as caught:
            make_client(origin.host).fetch_config(ref(origin, "app:v1"))
        assert "plain_http_registries" in caught.value.reason
        assert storage.requests == []


def test_redirect_count_is_capped(make_client: ClientFactory) -> None:
    with FakeRegistry() as origin, FakeRegistry() as storage:
        origin.add_image("app", "v1", MULTI)
        storage.add_image("app", "v1", MULTI)
        origin.faults.redirect_blobs_to = storage.url
        client = make_client(origin.host, storage.host, max_redirects=0)
        with pytest.raises(RedirectRefused) as caught:
            client.fetch_config(ref(origin, "app:v1"))
        assert "more than 0" in caught.value.reason


# -- TLS -------------------------------------------------------------------------------------


@pytest.mark.requires_system("openssl")
def test_tls_is_verified_by_default(make_client: ClientFactory, tls_files: tuple[str, str]) -> None:
    with FakeRegistry(tls=tls_files) as fake:
        fake.add_image("app", "v1", MULTI)
        with pytest.raises(TLSFailure) as caught:
            make_client().fetch_config(ref(fake, "app:v1"))
        assert isinstance(caught.value, PermanentError)
        fetched = make_client(verify_tls=tls_files[0]).fetch_config(ref(fake, "app:v1"))
        assert fetched.config == AMD64


@pytest.mark.requires_system("openssl")
def test_https_to_http_redirect_is_refused(
    make_client: ClientFactory, tls_files: tuple[str, str]
) -> None:
    with FakeRegistry(tls=tls_files, auth="bearer") as origin, FakeRegistry() as storage:
        origin.add_image("app", "v1", MULTI)
        storage.add_image("app", "v1", MULTI)
        origin.faults.redirect_blobs_to = storage.url
        client = make_client(storage.host, verify_tls=tls_files[0])
        with pytest.raises(RedirectRefused) as caught:
            client.fetch_config(ref(origin, "app:v1"))
        assert "downgrade" in caught.value.reason
        assert storage.requests == []


@pytest.mark.requires_system("openssl")
def test_plain_http_to_a_tls_registry_fails_cleanly(
    make_client: ClientFactory, tls_files: tuple[str, str]
) -> None:
    with FakeRegistry(tls=tls_files) as fake:
        fake.add_image("app", "v1", MULTI)
        started = time.monotonic()
        with pytest.raises((RegistryUnavailable, UnexpectedStatus, InvalidResponse)):
            make_client(fake.host, request_deadline=3).fetch_config(ref(fake, "app:v1"))
        assert time.monotonic() - started < 15


# -- deadlines and error classification ------------------------------------------------------


@pytest.mark.parametrize("headers_too", [False, True])
def test_slow_drip_is_cut_at_the_deadline(
    fake: FakeRegistry, make_client: ClientFactory, headers_too: bool
) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.faults.drip_interval = 0.05  # well under the read timeout: only the deadline helps
    fake.faults.drip_headers = headers_too
    client = make_client(fake.host, read_timeout=0.5, request_deadline=1.0)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as caught:
        client.fetch_config(ref(fake, "app:v1"))
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, TransientError)
    assert "deadline" in caught.value.reason
    assert elapsed < 10  # a hang (the whole drip takes ~15 s or more) fails here


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, None), (429, "7")])
def test_server_errors_and_rate_limits_are_transient(
    fake: FakeRegistry, make_client: ClientFactory, status: int, retry_after: str | None
) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.fail_next(status, count=1, retry_after=retry_after)
    client = make_client(fake.host)
    with pytest.raises(RegistryUnavailable) as caught:
        client.fetch_config(ref(fake, "app:v1"))
    assert isinstance(caught.value, TransientError)
    assert caught.value.code == status
    assert client.fetch_config(ref(fake, "app:v1")).config == AMD64  # the next try works


@pytest.mark.parametrize(
    ("status", "error"), [(403, AuthenticationFailed), (400, UnexpectedStatus)]
)
def test_client_errors_are_permanent(
    fake: FakeRegistry, make_client: ClientFactory, status: int, error: type[Exception]
) -> None:
    fake.add_image("app", "v1", MULTI)
    fake.fail_next(status)
    with pytest.raises(error) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert isinstance(caught.value, PermanentError)


def test_unknown_tag_is_permanent(fake: FakeRegistry, make_client: ClientFactory) -> None:
    fake.add_image("app", "v1", MULTI)
    with pytest.raises(ImageNotFound) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:nope"))
    assert isinstance(caught.value, PermanentError)
    assert caught.value.code == 404


def test_unknown_blob_is_permanent(fake: FakeRegistry, make_client: ClientFactory) -> None:
    data = canonical_json(AMD64)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(data), "size": len(data)},
        "layers": [],
    }
    fake.add_manifest("app", "v1", canonical_json(manifest), OCI_MANIFEST)
    with pytest.raises(ImageNotFound) as caught:
        make_client(fake.host).fetch_config(ref(fake, "app:v1"))
    assert "BLOB_UNKNOWN" in caught.value.reason


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_connection_refused_is_transient(make_client: ClientFactory) -> None:
    host = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(RegistryUnavailable) as caught:
        make_client(host).fetch_config(ImageReference.parse(f"{host}/app:v1"))
    assert isinstance(caught.value, TransientError)


# -- mirrors ---------------------------------------------------------------------------------


@pytest.fixture
def three() -> Iterator[tuple[FakeRegistry, FakeRegistry, FakeRegistry]]:
    with FakeRegistry() as mirror1, FakeRegistry() as mirror2, FakeRegistry() as origin:
        yield mirror1, mirror2, origin


def test_mirrors_are_tried_in_order_before_the_origin(
    three: tuple[FakeRegistry, FakeRegistry, FakeRegistry], make_client: ClientFactory
) -> None:
    mirror1, mirror2, origin = three
    mirror2.add_image("app", "v1", MULTI)
    origin.add_image("app", "v1", MULTI)
    client = make_client(
        mirror1.host,
        mirror2.host,
        origin.host,
        mirrors={origin.host: [mirror1.host, mirror2.host]},
    )
    fetched = client.fetch_config(ref(origin, "app:v1"))
    assert fetched.config == AMD64
    assert fetched.source == f"mirror:{mirror2.host}"
    assert mirror1.paths() == ["/v2/app/manifests/v1"]  # asked first, did not have it
    assert origin.requests == []


def test_origin_is_used_when_every_mirror_fails(
    three: tuple[FakeRegistry, FakeRegistry, FakeRegistry], make_client: ClientFactory
) -> None:
    mirror1, mirror2, origin = three
    origin.add_image("app", "v1", MULTI)
    mirror1.fail_next(503, count=10)
    mirror2.add_image("app", "v1", MULTI)
    mirror2.faults.tamper_blobs = True
    client = make_client(
        mirror1.host, mirror2.host, origin.host, mirrors={origin.host: [mirror1.host, mirror2.host]}
    )
    fetched = client.fetch_config(ref(origin, "app:v1"))
    assert fetched.source == f"registry:{origin.host}"
    assert fetched.config == AMD64
    assert mirror1.requests and mirror2.requests


@pytest.mark.parametrize(
    ("origin_fault", "expected"), [(503, RegistryUnavailable), (None, ImageNotFound)]
)
def test_final_error_is_the_origins_answer(
    three: tuple[FakeRegistry, FakeRegistry, FakeRegistry],
    make_client: ClientFactory,
    origin_fault: int | None,
    expected: type[Exception],
) -> None:
    mirror1, mirror2, origin = three
    mirror1.fail_next(500, count=10)  # transient on the mirror ...
    # mirror2 does not have the image: permanent on the mirror ...
    if origin_fault is not None:
        origin.add_image("app", "v1", MULTI)
        origin.fail_next(origin_fault, count=10)
    client = make_client(
        mirror1.host, mirror2.host, origin.host, mirrors={origin.host: [mirror1.host, mirror2.host]}
    )
    with pytest.raises(expected) as caught:
        client.fetch_config(ref(origin, "app:v1"))
    assert origin.host in caught.value.args[0]


# -- proxies and CA bundles from the environment ------------------------------------------------


class _ForwardingProxy(socketserver.ThreadingTCPServer):
    """An HTTP forward proxy: relays absolute-form requests to their origin (one request per
    connection) and logs the request lines."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardingHandler)
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ForwardingHandler(socketserver.StreamRequestHandler):
    server: _ForwardingProxy

    def handle(self) -> None:
        line = self.rfile.readline().decode("latin-1").rstrip("\r\n")
        headers = []
        while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            if not header.lower().startswith((b"proxy-connection:", b"connection:")):
                headers.append(header)
        self.server.log.append(line)
        method, target, version = line.split(" ", 2)
        parts = urlsplit(target)
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as up:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            up.sendall(f"{method} {path} {version}\r\n".encode() + b"".join(headers)
                       + b"Connection: close\r\n\r\n")
            while data := up.recv(65536):
                self.wfile.write(data)


def test_proxies_come_from_the_environment(
    fake: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_image("app", "v1", MULTI)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    proxy = _ForwardingProxy()
    thread = threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    settings = RegistrySettings(plain_http_registries=frozenset({fake.host}), tag_ttl=0,
                                memory_cache_entries=0)
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)  # upper case, as operators often write it
        with RegistryClient(settings) as client:
            assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
        assert proxy.log and all(line.split()[1].startswith(fake.url) for line in proxy.log)
        seen = len(proxy.log)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.0/8")
        with RegistryClient(settings) as client:
            assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
        with RegistryClient(settings, proxies=DIRECT) as client:  # what the tests use
            monkeypatch.delenv("NO_PROXY")
            assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
        assert len(proxy.log) == seen
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.requires_system("openssl")
def test_ca_bundle_variables_of_requests_still_apply(
    make_client: ClientFactory, tls_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeRegistry(tls=tls_files) as fake:
        fake.add_image("app", "v1", MULTI)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.setenv(name, tls_files[0])
            assert make_client().fetch_config(ref(fake, "app:v1")).config == AMD64
            monkeypatch.delenv(name)
        with pytest.raises(TLSFailure):
            make_client().fetch_config(ref(fake, "app:v1"))


# -- cache -----------------------------------------------------------------------------------


def test_cache_hit_means_zero_requests(
    fake: FakeRegistry, make_client: ClientFactory, clock: FakeClock
) -> None:
    top = fake.add_image("app", "v1", MULTI)
    client = make_client(fake.host, tag_ttl=300)
    first = client.fetch_config(ref(fake, "app:v1"))
    fake.clear_log()
    again = client.fetch_config(ref(fake, "app:v1"))
    by_digest = client.fetch_config(ref(fake, f"app@{top}"))
    assert fake.requests == []
    assert again.source == by_digest.source == "cache"
    assert again.config == first.config == by_digest.config
    assert again.config_digest == first.config_digest
    clock.advance(301)  # the tag memo expired: one HEAD, the content is still cached
    assert client.fetch_config(ref(fake, "app:v1")).config == AMD64
    assert [r.method for r in fake.requests] == ["HEAD"]


def test_a_moved_tag_is_followed_after_the_memo_expires(
    fake: FakeRegistry, make_client: ClientFactory, clock: FakeClock
) -> None:
    fake.add_image("app", "latest", only(MULTI, "linux/amd64"))
    client = make_client(fake.host, tag_ttl=60)
    assert client.fetch_config(ref(fake, "app:latest")).config == AMD64
    newer = image_config("linux/amd64", cmd=["v2"])
    fake.add_image("app", "latest", {"linux/amd64": newer})
    assert client.fetch_config(ref(fake, "app:latest")).config == AMD64  # memo still fresh
    clock.advance(61)
    assert client.fetch_config(ref(fake, "app:latest")).config == newer


def test_returned_config_is_a_fresh_dict_every_time(
    fake: FakeRegistry, make_client: ClientFactory
) -> None:
    fake.add_image("app", "v1", MULTI)
    client = make_client(fake.host)
    first = client.fetch_config(ref(fake, "app:v1"))
    assert type(first.config) is dict  # what handlers.start_script.parse_oci_config accepts
    first.config["config"]["Cmd"].append("--tampered")
    again = client.fetch_config(ref(fake, "app:v1"))
    assert again.source == "cache"
    assert again.config == AMD64


# -- probe -----------------------------------------------------------------------------------


class _NotARegistry(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_probe() -> None:
    with FakeRegistry() as open_registry, FakeRegistry(auth="bearer") as locked:
        for registry, expected in ((open_registry, "200"), (locked, "401")):
            settings = RegistrySettings(plain_http_registries=frozenset({registry.host}))
            ok, message = probe(settings, registry.host, proxies=DIRECT)
            assert ok, message
            assert expected in message
    closed = f"127.0.0.1:{_closed_port()}"
    settings = RegistrySettings(plain_http_registries=frozenset({closed}))
    ok, message = probe(settings, closed, proxies=DIRECT)
    assert not ok and closed in message
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotARegistry)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        settings = RegistrySettings(plain_http_registries=frozenset({host}))
        ok, message = probe(settings, host, proxies=DIRECT)
        assert not ok and "404" in message
    finally:
        server.shutdown()
        server.server_close()
    assert probe(RegistrySettings(), "not a host!")[0] is False
