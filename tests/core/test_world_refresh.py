"""The world cache refreshes once when many workers find it stale together (issue 14: eight
concurrent refreshes of a 100,000-image cloud took hookd's peak memory from 176 to 380 MB)."""

from __future__ import annotations

import threading
from typing import Any, cast

from lxml import etree

from hookd.client import OneClient
from hookd.world import WorldCache


class SlowClient:
    """Just what a refresh reads; ``version`` blocks until released, to make workers meet."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def version(self) -> str:
        with self._lock:
            self.refreshes += 1
        self.entered.set()
        self.release.wait(10)
        return "6.8.3"

    def system_config(self) -> etree._Element:
        return etree.fromstring(b"<OPENNEBULA_CONFIGURATION/>")

    def datastores(self) -> list[Any]:
        return []

    def hosts(self) -> list[Any]:
        return []

    def markets(self) -> list[Any]:
        return []


def test_workers_finding_the_world_stale_share_one_refresh() -> None:
    now = [1000.0]
    client = SlowClient()
    world = WorldCache(cast(OneClient, client), kernels={}, initrds={}, ttl=60.0,
                       clock=lambda: now[0])
    threads = [threading.Thread(target=world.ensure_fresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert client.entered.wait(10)
    client.release.set()
    for thread in threads:
        thread.join(10)
    assert client.refreshes == 1
    assert world.snapshot.version == (6, 8, 3)

    now[0] += 61.0  # past the TTL: one more refresh, again shared
    threads = [threading.Thread(target=world.ensure_fresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert client.refreshes == 2


def test_an_explicit_refresh_always_reads() -> None:
    client = SlowClient()
    client.release.set()
    world = WorldCache(cast(OneClient, client), kernels={}, initrds={})
    world.refresh()
    world.refresh()
    world.ensure_fresh()  # fresh: nothing read
    assert client.refreshes == 2
