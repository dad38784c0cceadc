"""Read-only calls: ``one.<kind>.info``, ``one.<kind>pool.info`` and the system calls.

Sources (OpenNebula/one, release-6.8.3):

* ``RequestManagerInfo::request_execute`` (``src/rm/RequestManagerInfo.cc``): ``-1`` means
  the caller for ``one.user.info``; a missing object is NO_EXISTS with the requested ID
  (``Error getting image Pool.`` when that ID is -1); ``decrypt`` is read only for admins.
* ``RequestManagerPoolInfoFilter::dump`` (``src/rm/RequestManagerPoolInfoFilter.cc``):
  ``filter_flag < -4`` is ``Incorrect filter_flag`` (0x1000); ID ranges and pages as in
  :meth:`hookd.testing.world.Pool.select`; order from ``API_LIST_ORDER`` (DESC).
  Datastore, host, cluster and marketplace pools take no filter and list everything.
* ``SystemVersion`` / ``SystemConfig`` (``src/rm/RequestManagerSystem.cc``) and
  ``ZoneRaftStatus`` (``RaftManager::to_xml`` in ``src/raft/RaftManager.cc``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hookd.testing.objects import PoolObject
from hookd.testing.request import AUTHORIZATION, NO_EXISTS, XML_RPC_API, Call, RequestFailed
from hookd.testing.world import FILTER_ALL, FILTER_GROUP, Pool, World

T = TypeVar("T", bound=PoolObject)

Handler = Callable[[Call], None]


def object_info(world: World, pool: Pool[T], *, is_user: bool = False) -> Handler:
    """Handler for ``one.<kind>.info(session, id, [decrypt])``."""

    def handler(call: Call) -> None:
        oid = call.params.get_int(1)
        if oid == -1 and is_user:
            oid = call.uid
        obj = pool.get(oid)
        if obj is None:
            raise RequestFailed(NO_EXISTS, resp_id=oid)
        if call.is_admin and len(call.params) > 2:
            call.params.get_bool(2)
        call.succeed(obj.xml(world.flavour))

    return handler


def dump(world: World, call: Call, pool: Pool[T], flag: int, start: int, end: int) -> str:
    """``<ROOT>`` + the selected objects' XML + ``</ROOT>``."""
    objects = pool.select(
        flag, start, end, desc=world.list_order_desc, caller_uid=call.uid,
        caller_gid=call.gid, caller_groups=call.group_ids,
    )
    flavour = world.flavour
    return f"<{pool.root}>" + "".join(o.xml(flavour) for o in objects) + f"</{pool.root}>"


def filtered_pool_info(world: World, pool: Pool[T]) -> Handler:
    """Handler for ``one.<kind>pool.info(session, filter, start, end)``."""

    def handler(call: Call) -> None:
        flag = call.params.get_int(1)
        start = call.params.get_int(2)
        end = call.params.get_int(3)
        if flag < FILTER_GROUP:
            raise RequestFailed(XML_RPC_API, "Incorrect filter_flag")
        call.succeed(dump(world, call, pool, flag, start, end))

    return handler


def full_pool_info(world: World, pool: Pool[T]) -> Handler:
    """Handler for pools listed without parameters (datastore, host, cluster, market)."""

    def handler(call: Call) -> None:
        call.succeed(dump(world, call, pool, FILTER_ALL, -1, -1))

    return handler


def system_version(world: World) -> Handler:
    def handler(call: Call) -> None:
        call.succeed(world.flavour.version)

    return handler


def system_config(config_xml: Callable[[], str]) -> Handler:
    def handler(call: Call) -> None:
        if call.gid != 0:
            raise RequestFailed(
                AUTHORIZATION,
                "The oned configuration can only be retrieved by users in the oneadmin group",
            )
        call.succeed(config_xml())

    return handler


def raft_status(raft_xml: Callable[[], str]) -> Handler:
    def handler(call: Call) -> None:
        call.succeed(raft_xml())

    return handler
