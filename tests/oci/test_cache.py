"""The content cache (memory LRU + verified disk store) and the tag memo, alone and in use."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from handlers.errors import HookdError
from hookd.oci import ContentCache, ImageReference
from hookd.testing.registry import FakeRegistry, canonical_json, image_config, sha256_digest

from .conftest import ClientFactory, FakeClock

AMD64 = image_config("linux/amd64", cmd=["redis-server"], user="redis")
CONFIG_BYTES = canonical_json(AMD64)
CONFIG_DIGEST = sha256_digest(CONFIG_BYTES)


def blob(n: int) -> tuple[str, bytes]:
    data = b"%d" % n * 10
    return sha256_digest(data), data


def test_memory_lru_is_bounded_by_entries_and_bytes() -> None:
    cache = ContentCache(max_entries=2, max_bytes=1000)
    (d1, b1), (d2, b2), (d3, b3) = blob(1), blob(2), blob(3)
    cache.put(d1, b1)
    cache.put(d2, b2)
    assert cache.get(d1, 100) == b1  # d1 is now the most recent
    cache.put(d3, b3)
    assert cache.get(d2, 100) is None  # evicted
    assert cache.get(d1, 100) == b1 and cache.get(d3, 100) == b3
    small = ContentCache(max_entries=10, max_bytes=25)
    small.put(d1, b1)
    small.put(d2, b2)
    small.put(d3, b3)
    assert small.get(d1, 100) is None and small.get(d3, 100) == b3
    assert small.get(d3, 5) is None  # larger than the caller's cap


def test_tag_memo_expires(clock: FakeClock) -> None:
    cache = ContentCache(clock=clock)
    key = ("registry.example", "app", "latest")
    cache.put_tag(key, CONFIG_DIGEST, ttl=60)
    clock.advance(59)
    assert cache.get_tag(key) == CONFIG_DIGEST
    clock.advance(2)
    assert cache.get_tag(key) is None
    cache.put_tag(key, CONFIG_DIGEST, ttl=0)  # disabled
    assert cache.get_tag(key) is None


def test_disk_entries_are_private_and_written_atomically(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "oci")
    cache.put(CONFIG_DIGEST, CONFIG_BYTES)
    path = cache.path_for(CONFIG_DIGEST)
    assert path is not None and path.read_bytes() == CONFIG_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (tmp_path / "oci", path.parent.parent, path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    fresh = ContentCache(tmp_path / "oci")
    assert fresh.get(CONFIG_DIGEST, 1 << 20) == CONFIG_BYTES


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "symlink", "fifo", "oversize"])
def test_damaged_disk_entries_are_misses(tmp_path: Path, damage: str) -> None:
    ContentCache(tmp_path).put(CONFIG_DIGEST, CONFIG_BYTES)
    path = ContentCache(tmp_path).path_for(CONFIG_DIGEST)
    assert path is not None
    if damage == "flip":
        path.write_bytes(CONFIG_BYTES.replace(b"redis", b"evil!"))
    elif damage == "truncate":
        path.write_bytes(CONFIG_BYTES[:-1])
    elif damage == "grow":
        path.write_bytes(CONFIG_BYTES + b" ")
    elif damage == "symlink":
        target = tmp_path / "elsewhere"
        target.write_bytes(CONFIG_BYTES)
        path.unlink()
        path.symlink_to(target)
    elif damage == "fifo":
        path.unlink()
        os.mkfifo(path)
    limit = 100 if damage == "oversize" else 1 << 20
    assert ContentCache(tmp_path).get(CONFIG_DIGEST, limit) is None
    if damage in ("flip", "truncate", "grow"):
        assert not path.exists()  # removed, so the next put rewrites it


def test_unwritable_cache_directory_degrades_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cache = ContentCache(blocker / "oci")
    cache.put(CONFIG_DIGEST, CONFIG_BYTES)  # must not raise
    assert cache.get(CONFIG_DIGEST, 1 << 20) == CONFIG_BYTES


def test_disk_cache_survives_a_new_client(
    fake: FakeRegistry, make_client: ClientFactory, tmp_path: Path
) -> None:
    top = fake.add_image("library/redis", "7", {"linux/amd64": AMD64}, attestation=True)
    first = make_client(fake.host, cache_dir=str(tmp_path)).fetch_config(
        ImageReference.parse(f"{fake.host}/library/redis:7")
    )
    assert first.config == AMD64
    fake.clear_log()
    by_digest = make_client(fake.host, cache_dir=str(tmp_path)).fetch_config(
        ImageReference.parse(f"{fake.host}/library/redis@{top}")
    )
    assert by_digest.config == AMD64 and by_digest.source == "cache"
    assert fake.requests == []
    by_tag = make_client(fake.host, cache_dir=str(tmp_path)).fetch_config(
        ImageReference.parse(f"{fake.host}/library/redis:7")
    )
    assert by_tag.config == AMD64
    assert [(r.method, r.path) for r in fake.requests] == [
        ("HEAD", "/v2/library/redis/manifests/7")
    ]


def test_tampered_cache_file_is_detected_and_refetched(
    fake: FakeRegistry, make_client: ClientFactory, tmp_path: Path
) -> None:
    top = fake.add_image("app", "v1", {"linux/amd64": AMD64})
    ref = ImageReference.parse(f"{fake.host}/app@{top}")
    make_client(fake.host, cache_dir=str(tmp_path)).fetch_config(ref)
    path = ContentCache(tmp_path).path_for(CONFIG_DIGEST)
    assert path is not None
    evil = CONFIG_BYTES.replace(b"redis-server", b"/bin/rm -rf")
    path.write_bytes(evil)
    fake.clear_log()
    fetched = make_client(fake.host, cache_dir=str(tmp_path)).fetch_config(ref)
    assert fetched.config == AMD64
    assert fetched.source == f"registry:{fake.host}"
    assert fake.paths("GET") == [f"/v2/app/blobs/{CONFIG_DIGEST}"]
    assert path.read_bytes() == CONFIG_BYTES  # repaired
    path.write_bytes(evil)
    host = fake.host
    fake.stop()  # with the registry gone, the tampered file must not be served either
    with pytest.raises(HookdError):
        make_client(host, cache_dir=str(tmp_path)).fetch_config(ref)
