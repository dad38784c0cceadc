"""Image references from OpenNebula image PATHs (and URL_ARGS) and Docker-style names."""

from __future__ import annotations

import pytest

from handlers.errors import PermanentError
from hookd.oci import DOCKER_HUB_API_HOST, ImageReference, InvalidReference

HUB = DOCKER_HUB_API_HOST
DIGEST = "sha256:" + "ab" * 32

PATH_CASES: list[tuple[str, str | None, tuple[str, str, str | None, str | None]]] = [
    # Docker Hub marketplace: official images, no tag → latest, library/ prefix
    (
        "docker://nginx?size=2048&filesystem=ext4&format=raw",
        None,
        (HUB, "library/nginx", "latest", None),
    ),
    ("docker://nginx", None, (HUB, "library/nginx", "latest", None)),
    # tag in the query, in URL_ARGS, both: the last non-empty one wins
    ("docker://nginx?size=2048&tag=1.25&format=raw", None, (HUB, "library/nginx", "1.25", None)),
    ("docker://nginx?size=2048&format=raw", "tag=1.25", (HUB, "library/nginx", "1.25", None)),
    (
        "docker://nginx?tag=1.24&size=2048",
        "tag=1.25-alpine",
        (HUB, "library/nginx", "1.25-alpine", None),
    ),
    ("docker://nginx?tag=1.24&tag=1.26", None, (HUB, "library/nginx", "1.26", None)),
    ("docker://nginx?tag=1.24&tag=", None, (HUB, "library/nginx", "1.24", None)),  # empty: ignored
    ("docker://nginx?size=2048", "tag=", (HUB, "library/nginx", "latest", None)),
    ("docker://nginx?TAG=1.25", None, (HUB, "library/nginx", "latest", None)),  # case matters
    ("docker://nginx?size=1?tag=9", None, (HUB, "library/nginx", "latest", None)),  # cut -f 2
    # user images and explicit Docker Hub hosts
    ("docker://bitnami/nginx?size=2048", None, (HUB, "bitnami/nginx", "latest", None)),
    ("docker://docker.io/nginx?size=1", None, (HUB, "library/nginx", "latest", None)),
    ("docker://index.docker.io/library/redis?size=1", "tag=7", (HUB, "library/redis", "7", None)),
    ("docker://registry-1.docker.io/alpine?x=1", None, (HUB, "library/alpine", "latest", None)),
    # Docker Registry marketplace: host[:port]/app
    (
        "docker://registry.example.com:5000/app?size=1024",
        None,
        ("registry.example.com:5000", "app", "latest", None),
    ),
    (
        "docker://localhost:5000/team/app?size=1",
        "tag=v2",
        ("localhost:5000", "team/app", "v2", None),
    ),
    ("docker://localhost/app?size=1", None, ("localhost", "app", "latest", None)),
    (
        "docker://REGISTRY.Example.com/app?size=1",
        None,
        ("registry.example.com", "app", "latest", None),
    ),
    ("docker://[::1]:5000/app?size=1", None, ("[::1]:5000", "app", "latest", None)),
    ("docker://10.0.0.7:5000/a/b/c?size=1", None, ("10.0.0.7:5000", "a/b/c", "latest", None)),
    # no dot, colon or localhost in the first component: a Docker Hub namespace
    ("docker://myregistry/app?size=1", None, (HUB, "myregistry/app", "latest", None)),
    # inline tag and digest
    ("docker://nginx:1.25?size=2048", None, (HUB, "library/nginx", "1.25", None)),
    ("docker://nginx:1.25?size=2048&tag=1.25", None, (HUB, "library/nginx", "1.25", None)),
    (f"docker://nginx@{DIGEST}?size=2048", None, (HUB, "library/nginx", None, DIGEST)),
    (f"docker://nginx@{DIGEST}?size=2048", "tag=1.25", (HUB, "library/nginx", "1.25", DIGEST)),
    (
        f"docker://host.example:5000/app:v1@{DIGEST}",
        None,
        ("host.example:5000", "app", "v1", DIGEST),
    ),
    ("docker://my_org/my-app__x.y?size=1", None, (HUB, "my_org/my-app__x.y", "latest", None)),
]


@pytest.mark.parametrize(("path", "url_args", "expected"), PATH_CASES)
def test_from_one_path(
    path: str, url_args: str | None, expected: tuple[str, str, str | None, str | None]
) -> None:
    ref = ImageReference.from_one_path(path, url_args)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


HOSTILE_PATHS: list[tuple[str, str | None]] = [
    ("", None),
    ("docker://", None),
    ("docker://?size=1", None),
    ("http://nginx", None),
    ("DOCKER://nginx", None),
    ("dockerfile:///var/tmp/Dockerfile?size=1", None),
    ("docker://nginx?tag=1.25;rm -rf /", None),
    ("docker://nginx?tag=$(id)", None),
    ("docker://nginx?tag=`id`", None),
    ("docker://nginx", "tag=1.25;reboot"),
    ("docker://nginx", "tag=a b"),
    ("docker://nginx\n", None),
    ("docker://nginx\x00", None),
    ("docker://nginx?tag=%2e%2e", None),
    ("docker://ngïnx", None),
    ("docker://Nginx", None),
    ("docker://nginx/../../etc", None),
    ("docker://nginx//x", None),
    ("docker://nginx/", None),
    ("docker://-nginx", None),
    ("docker://nginx--?size=1", None),
    ("docker://a..b/c", None),  # host with an empty label
    ("docker://host:99999/app", None),
    ("docker://host:0/app", None),
    ("docker://[zz::1]:5000/app", None),
    ("docker://user:pass@host.example/app", None),
    ("docker://nginx:", None),
    ("docker://nginx@", None),
    ("docker://nginx@sha256:abc", None),
    ("docker://nginx@md5:" + "a" * 32, None),
    ("docker://nginx@sha256:" + "AB" * 32, None),
    ("docker://nginx@sha256:" + "ab" * 32 + "@sha256:" + "ab" * 32, None),
    ("docker://nginx:.hidden", None),
    ("docker://nginx:" + "a" * 129, None),
    ("docker://nginx:1.25?tag=1.26", None),  # ambiguous: inline tag contradicts tag=
    ("docker://" + "a/" * 200 + "a", None),
    ("docker://" + "a" * 5000, None),
    ("docker://nginx&tag=1.25", None),  # what fs/cp makes of a PATH without '?' + URL_ARGS
    ("docker://host.example/" + "x" * 300, None),
    ("docker://" + "a" * 64 + ".example.com/app", None),  # DNS label longer than 63
]


@pytest.mark.parametrize(("path", "url_args"), HOSTILE_PATHS)
def test_hostile_paths_are_rejected(path: str, url_args: str | None) -> None:
    with pytest.raises(InvalidReference) as caught:
        ImageReference.from_one_path(path, url_args)
    assert isinstance(caught.value, PermanentError)
    assert caught.value.reason
    assert "\n" not in caught.value.reason


def test_url_args_appended_like_fs_cp_when_path_has_no_query() -> None:
    # fs/cp builds "docker://nginx&tag=1.25": the downloader then pulled "nginx&tag=1.25:1.25",
    # which fails; we refuse it the same way instead of guessing.
    with pytest.raises(InvalidReference):
        ImageReference.from_one_path("docker://nginx", "tag=1.25")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("docker.io/library/nginx:1.25", "docker.io/library/nginx:1.25"),
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}"),
        (f"localhost:5000/app:v1@{DIGEST}", f"localhost:5000/app:v1@{DIGEST}"),
        ("ghcr.io/org/tool:2", "ghcr.io/org/tool:2"),
    ],
)
def test_str_is_canonical_and_round_trips(name: str, expected: str) -> None:
    ref = ImageReference.parse(name)
    assert str(ref) == expected
    assert ImageReference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "kwargs",
    [
        {"registry": "docker.io", "repository": "library/nginx"},  # not normalised
        {"registry": HUB, "repository": "nginx"},  # Docker Hub needs library/
        {"registry": "host.example", "repository": "Upper"},
        {"registry": "host.example", "repository": "app", "tag": None},
        {"registry": "host.example", "repository": "app", "tag": "bad tag"},
        {"registry": "host.example", "repository": "app", "digest": "sha256:00"},
    ],
)
def test_direct_construction_is_validated(kwargs: dict[str, str | None]) -> None:
    with pytest.raises(InvalidReference):
        ImageReference(**kwargs)  # type: ignore[arg-type]
