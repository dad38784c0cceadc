"""The simulated oned state: pools of objects, a lock, a scheduler and the event sink.

* :class:`Pool` keeps objects by ID plus a sorted ID list, so a pool listing with an ID
  range or a page (``LIMIT offset,size`` after ``ORDER BY oid DESC``) is a slice, not a
  scan (``PoolSQL::dump`` / ``PoolSQL::oid_filter`` in ``src/pool/PoolSQL.cc`` at
  release-6.8.3). Owner filters (``PoolSQL::usr_filter``) are applied while walking.
* :class:`World` holds one :class:`threading.RLock` that every request, control and
  scheduled task takes before touching state.
* :meth:`World.save_image` is ``ImagePool::update`` (``src/image/ImagePool.cc``): when
  the state differs from ``prev_state`` the STATE event is built from the object as it is
  (still carrying the old ``PREV_STATE``), then ``prev_state`` becomes the state.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hookd.testing import events
from hookd.testing.flavour import Flavour
from hookd.testing.objects import (
    Cluster,
    Datastore,
    Host,
    Image,
    ImageState,
    MarketPlace,
    MarketPlaceApp,
    PoolObject,
    User,
    VMTemplate,
    image_state_to_str,
)

T = TypeVar("T", bound=PoolObject)
LOG = logging.getLogger("hookd.testing")

# RequestManagerPoolInfoFilter.cc
FILTER_ALL = -2
FILTER_MINE = -3
FILTER_MINE_GROUP = -1
FILTER_GROUP = -4


class Pool(Generic[T]):
    """Objects of one kind, with oned's ID allocation and listing rules."""

    def __init__(self, root: str, *, unique_names: bool = False) -> None:
        self.root = root
        self.objects: dict[int, T] = {}
        self.ids: list[int] = []
        self.last_oid = -1
        self.unique_names = unique_names
        self._names: dict[tuple[int, str], int] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self) -> Iterator[T]:
        return (self.objects[i] for i in list(self.ids))

    def get(self, oid: int) -> T | None:
        return self.objects.get(oid)

    def next_oid(self) -> int:
        return self.last_oid + 1

    def reserve_system_ids(self) -> None:
        """``set_lastOID(99)``: user objects start at 100 (clusters, datastores, markets)."""
        self.last_oid = max(self.last_oid, 99)

    def add(self, obj: T) -> T:
        """Insert ``obj`` (its ``oid`` must be :meth:`next_oid` or a free higher ID)."""
        if obj.oid in self.objects:
            raise ValueError(f"{self.root}: ID {obj.oid} is taken")
        self.objects[obj.oid] = obj
        if not self.ids or obj.oid > self.ids[-1]:
            self.ids.append(obj.oid)
        else:
            bisect.insort(self.ids, obj.oid)
        self.last_oid = max(self.last_oid, obj.oid)
        if self.unique_names:
            self._names[(obj.uid, obj.name)] = obj.oid
        return obj

    def add_many(self, objs: list[T]) -> None:
        """Bulk insert of objects with consecutive IDs above every existing ID."""
        for obj in objs:
            self.objects[obj.oid] = obj
            if self.unique_names:
                self._names[(obj.uid, obj.name)] = obj.oid
        self.ids.extend(o.oid for o in objs)
        if objs:
            self.last_oid = max(self.last_oid, objs[-1].oid)

    def remove(self, oid: int) -> T | None:
        obj = self.objects.pop(oid, None)
        if obj is None:
            return None
        pos = bisect.bisect_left(self.ids, oid)
        if pos < len(self.ids) and self.ids[pos] == oid:
            del self.ids[pos]
        if self.unique_names and self._names.get((obj.uid, obj.name)) == oid:
            del self._names[(obj.uid, obj.name)]
        return obj

    def find_name(self, name: str, uid: int) -> int | None:
        """``PoolSQL::exist(name, uid)``."""
        if self.unique_names:
            return self._names.get((uid, name))
        for obj in self.objects.values():
            if obj.name == name and obj.uid == uid:
                return obj.oid
        return None

    def select(
        self,
        filter_flag: int,
        start: int,
        end: int,
        *,
        desc: bool,
        caller_uid: int,
        caller_gid: int,
        caller_groups: set[int],
    ) -> list[T]:
        """The objects ``RequestManagerPoolInfoFilter::dump`` would list, in order."""
        ids = self.ids
        lo, hi = 0, len(ids)
        if end >= -1 and start != -1:  # PoolSQL::oid_filter
            lo = bisect.bisect_left(ids, start)
            if end != -1:
                hi = max(lo, bisect.bisect_right(ids, end))
        limit = -end if end < -1 else -1
        offset = max(start, 0) if limit != -1 else 0

        predicate = owner_filter(filter_flag, caller_uid, caller_gid, caller_groups)

        if predicate is None:
            if limit == -1:
                window = ids[lo:hi]
                chosen = window[::-1] if desc else window
            elif desc:
                top = hi - offset
                chosen = ids[max(lo, top - limit) : max(lo, top)][::-1]
            else:
                chosen = ids[lo + offset : min(hi, lo + offset + limit)]
            return [self.objects[i] for i in chosen]

        order = range(hi - 1, lo - 1, -1) if desc else range(lo, hi)
        out: list[T] = []
        skipped = 0
        for index in order:
            obj = self.objects[ids[index]]
            if not predicate(obj):
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(obj)
            if limit != -1 and len(out) >= limit:
                break
        return out


def owner_filter(
    flag: int, uid: int, gid: int, groups: set[int]
) -> Callable[[PoolObject], bool] | None:
    """``PoolSQL::usr_filter`` for an admin caller (no ACL part); None: no filter."""

    def mine(o: PoolObject) -> bool:
        return o.uid == uid

    def group(o: PoolObject) -> bool:
        return o.gid == gid

    def mine_or_groups(o: PoolObject) -> bool:
        return o.uid == uid or o.gid in groups

    def owned_by(o: PoolObject) -> bool:
        return o.uid == flag

    return {FILTER_ALL: None, FILTER_MINE: mine, FILTER_GROUP: group,
            FILTER_MINE_GROUP: mine_or_groups}.get(flag, owned_by)


class Scheduler:
    """Runs callables after a delay on one background thread (the driver callbacks)."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sim-scheduler", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._counter), fn))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._queue and self._queue[0][0] <= time.monotonic():
                        break
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._queue)
            try:
                fn()
            except Exception:  # a failing callback must not stop the others
                LOG.exception("simulator scheduled task failed")

    def run_pending(self) -> int:
        """Run every queued callable now, in due order; return how many ran."""
        with self._cond:
            due = [heapq.heappop(self._queue) for _ in range(len(self._queue))]
        for _when, _seq, fn in due:
            fn()
        return len(due)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)


class World:
    """All simulated oned state and the operations several request handlers share."""

    def __init__(
        self,
        flavour: Flavour,
        *,
        emit: Callable[[str, bool], None],
        ds_location: str = "/var/lib/one//datastores",
    ) -> None:
        self.flavour = flavour
        self.lock = threading.RLock()
        self._emit = emit
        self.changed = threading.Condition(self.lock)
        self.list_order_desc = True
        self.ds_location = ds_location
        self.images: Pool[Image] = Pool("IMAGE_POOL", unique_names=True)
        self.templates: Pool[VMTemplate] = Pool("VMTEMPLATE_POOL", unique_names=True)
        self.datastores: Pool[Datastore] = Pool("DATASTORE_POOL")
        self.hosts: Pool[Host] = Pool("HOST_POOL")
        self.clusters: Pool[Cluster] = Pool("CLUSTER_POOL")
        self.markets: Pool[MarketPlace] = Pool("MARKETPLACE_POOL")
        self.apps: Pool[MarketPlaceApp] = Pool("MARKETPLACEAPP_POOL")
        self.users: Pool[User] = Pool("USER_POOL")
        self.admin_name = "oneadmin"
        # Test accounting, not oned state: how often each object's template really changed.
        self.template_changes: dict[tuple[str, int], int] = {}

    def count_template_change(self, obj: PoolObject) -> None:
        key = (type(obj).__name__.lower(), obj.oid)
        self.template_changes[key] = self.template_changes.get(key, 0) + 1

    def rename_admin(self, name: str) -> None:
        """Give user 0 (and the UNAME of everything it owns) a new name."""
        self.admin_name = name
        for pool in (self.images, self.templates, self.datastores, self.hosts, self.clusters,
                     self.markets, self.apps, self.users):
            for obj in pool:
                if obj.uid == 0:
                    obj.uname = name
                    if isinstance(obj, User):
                        obj.name = name
                    obj.invalidate()

    @staticmethod
    def now() -> int:
        return int(time.time())

    # -- ImagePool::update ---------------------------------------------------------------
    def save_image(self, image: Image) -> None:
        """Persist ``image``; publish a STATE event when its state changed."""
        if image.state != image.prev_state:
            image.invalidate()
            self.emit_state(
                events.state_message(
                    "IMAGE",
                    image_state_to_str(image.state),
                    image.oid,
                    image.xml(self.flavour),
                )
            )
        image.prev_state = image.state
        image.invalidate()
        self.changed.notify_all()

    def emit_state(self, message_b64: str) -> None:
        """Hand a STATE HOOK_MESSAGE to the hook manager."""
        self._emit(message_b64, True)

    def emit_api(self, message_b64: str) -> None:
        """Hand an API HOOK_MESSAGE to the hook manager."""
        self._emit(message_b64, False)

    def set_image_state(self, image: Image, state: int) -> None:
        """``Image::set_state``: leaving LOCKED (or any change to a non-LOCKED state)
        drops the DB lock (``unlock_db(-1,-1)`` in ``src/image/Image.cc``)."""
        if state != ImageState.LOCKED:
            image.lock = None
        image.state = state
        image.invalidate()
