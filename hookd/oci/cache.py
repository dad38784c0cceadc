"""A content-addressed cache of manifests and config blobs, plus a tag→digest memo.

Content is keyed by its digest, so an entry can never be stale: a config once fetched for a
digest never needs the network again. Entries live in a bounded in-memory LRU and, when a
directory is configured, on disk under ``<dir>/blobs/<algorithm>/<hex>`` (directories 0700,
files 0600, written atomically). A file is re-hashed every time it is read: one that does not
match its name (tampered, truncated, planted) is deleted and treated as a miss, so the
directory needs no more trust than the network does.

Tags move, so the memo that maps ``(registry, repository, tag)`` to a manifest digest expires
after ``ttl`` seconds (and lives in memory only).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import structlog

from hookd.oci.digest import compute_digest, split_digest

log = structlog.get_logger(__name__)

TagKey = tuple[str, str, str]
_MAX_TAGS = 4096


class ContentCache:
    """Thread-safe; all failures of the disk layer degrade to a cache miss."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_entries: int = 256,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._tags: OrderedDict[TagKey, tuple[str, float]] = OrderedDict()

    # -- content --------------------------------------------------------------------------

    def get(self, digest: str, max_size: int) -> bytes | None:
        """The content for ``digest`` (at most ``max_size`` bytes), or None."""
        with self._lock:
            data = self._memory.get(digest)
            if data is not None:
                self._memory.move_to_end(digest)
                return data if len(data) <= max_size else None
        data = self._read_file(digest, max_size)
        if data is not None:
            self._remember(digest, data)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store ``data``, which the caller has verified against ``digest``."""
        self._remember(digest, data)
        self._write_file(digest, data)

    def path_for(self, digest: str) -> Path | None:
        """Where ``digest`` is (or would be) stored on disk; None without a directory."""
        if self._directory is None:
            return None
        algorithm, hexpart = split_digest(digest)
        return self._directory / "blobs" / algorithm / hexpart

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) > self._max_bytes or self._max_entries == 0:
            return
        with self._lock:
            previous = self._memory.pop(digest, None)
            if previous is not None:
                self._memory_bytes -= len(previous)
            self._memory[digest] = data
            self._memory_bytes += len(data)
            while len(self._memory) > self._max_entries or self._memory_bytes > self._max_bytes:
                _, evicted = self._memory.popitem(last=False)
                self._memory_bytes -= len(evicted)

    def _read_file(self, digest: str, max_size: int) -> bytes | None:
        path = self.path_for(digest)
        if path is None:
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            with os.fdopen(os.open(path, flags), "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size > max_size:
                    data = None
                else:
                    data = handle.read(max_size + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.debug("oci.cache.unreadable", digest=digest, error=type(exc).__name__)
            return None
        algorithm, _ = split_digest(digest)
        if data is None or len(data) > max_size or compute_digest(data, algorithm) != digest:
            log.debug("oci.cache.corrupt_entry_removed", digest=digest)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def _write_file(self, digest: str, data: bytes) -> None:
        path = self.path_for(digest)
        if path is None:
            return
        tmp_name: str | None = None
        try:
            for directory in (path.parent.parent.parent, path.parent.parent, path.parent):
                directory.mkdir(mode=0o700, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mode 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            log.debug("oci.cache.write_failed", digest=digest, error=type(exc).__name__)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    # -- tag memo -------------------------------------------------------------------------

    def get_tag(self, key: TagKey) -> str | None:
        """The manifest digest remembered for ``(registry, repository, tag)``, if fresh."""
        with self._lock:
            entry = self._tags.get(key)
            if entry is None:
                return None
            digest, expires = entry
            if self._clock() >= expires:
                del self._tags[key]
                return None
            return digest

    def put_tag(self, key: TagKey, digest: str, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._tags.pop(key, None)
            self._tags[key] = (digest, self._clock() + ttl)
            while len(self._tags) > _MAX_TAGS:
                self._tags.popitem(last=False)
