"""Request logic shared by several object kinds: authorization, update, lock, unlock.

Sources (OpenNebula/one, release-6.8.3):

* ``Request::basic_authorization`` (``src/rm/Request.cc``) and the lock rule of
  ``AclManager::oneadmin_authorize`` (``src/acl/AclManager.cc``): a locked object refuses an
  operation when ``lock level <= operation`` (USE=1, MANAGE=2, ADMIN=4) -- even for
  oneadmin -- and ``AuthManager`` words it ``"<TYPE> is locked. [<id>]"``
  (``src/authm/AuthManager.cc``), which ``failure_message`` turns into
  ``User [0] : IMAGE is locked. [1].`` with code AUTHORIZATION (0x200).
* ``RequestManagerUpdateTemplate::request_execute``
  (``src/rm/RequestManagerUpdateTemplate.cc``): authorization, then ``Wrong update type``,
  then the parse (``Cannot update template. Parse error...``), then ``pool->update``
  whose result is *ignored*: when the new body is not well-formed XML (a value holding
  ``]]>``), ``insert_replace`` refuses to write it and the call still answers success.
* ``RequestManagerLock`` / ``RequestManagerUnlock`` (``src/rm/RequestManagerLock.cc``) and
  ``PoolObjectSQL::lock_db`` / ``unlock_db`` / ``test_lock_db``.
"""

from __future__ import annotations

import random
from typing import TypeVar

from hookd.testing.objects import Image, LockInfo, PoolObject
from hookd.testing.request import (
    ACTION,
    AUTHORIZATION,
    INTERNAL,
    NO_EXISTS,
    OBJECT_TYPES,
    XML_RPC_API,
    Call,
    RequestFailed,
)
from hookd.testing.template_lang import Template, TemplateParseError, parse_template
from hookd.testing.world import Pool, World

# AuthRequest::Operation (include/AuthRequest.h); *_NO_LCK variants skip the lock test.
OP_USE = 1
OP_MANAGE = 2
OP_ADMIN = 4
OP_NO_LOCK = 0

T = TypeVar("T", bound=PoolObject)


def check_lock(kind: str, obj: PoolObject, op: int) -> None:
    """Refuse ``op`` on a locked object like ``AclManager::oneadmin_authorize``."""
    if op and obj.lock is not None and obj.lock.level <= op:
        raise RequestFailed(AUTHORIZATION, f"{OBJECT_TYPES[kind]} is locked. [{obj.oid}]")


def fetch(pool: Pool[T], oid: int) -> T:
    """``pool->get(oid)`` or NO_EXISTS with ``resp_id = oid``."""
    obj = pool.get(oid)
    if obj is None:
        raise RequestFailed(NO_EXISTS, resp_id=oid)
    return obj


def basic_authorization(call: Call, pool: Pool[T], oid: int, op: int) -> T | None:
    """``Request::basic_authorization``: existence and lock checks for ``oid >= 0``."""
    if oid < 0:
        return None
    obj = fetch(pool, oid)
    check_lock(call.auth_object, obj, op)
    return obj


def update_template(call: Call, world: World, pool: Pool[T], *, replace_mode: bool) -> None:
    """``one.<kind>.update(session, id, template, [type])``."""
    oid = call.params.get_int(1)
    text = call.params.get_str(2)
    update_type = call.params.get_int(3) if len(call.params) > 3 else 0
    basic_authorization(call, pool, oid, OP_MANAGE)
    if update_type not in (0, 1):
        raise RequestFailed(XML_RPC_API, "Wrong update type")
    obj = fetch(pool, oid)
    try:
        parsed = parse_template(text, replace_mode=replace_mode,
                                trim=world.flavour.major >= 7)
    except TemplateParseError as exc:
        raise RequestFailed(INTERNAL, f"Cannot update template. {exc}") from exc
    if update_type == 0:
        candidate = parsed
    else:
        candidate = obj.template.copy()
        candidate.merge(parsed)
    store_template(world, obj, candidate)
    call.succeed(oid)


def store_template(world: World, obj: PoolObject, candidate: Template) -> bool:
    """``pool->update(obj)`` after a template change; False when oned could not write it."""
    if not candidate.xml_is_well_formed():
        return False  # insert_replace: "Error transforming ... to XML."; change lost
    candidate.normalize_for_storage()
    if candidate.to_xml() != obj.template.to_xml():
        world.count_template_change(obj)
    obj.template = candidate
    obj.invalidate()
    if isinstance(obj, Image):
        world.save_image(obj)
    return True


def lock(call: Call, world: World, pool: Pool[T]) -> None:
    """``one.<kind>.lock(session, id, level, [test])``."""
    oid = call.params.get_int(1)
    level = call.params.get_int(2)
    test = call.params.get_bool(3) if len(call.params) > 3 else False
    basic_authorization(call, pool, oid, OP_NO_LOCK)
    obj = fetch(pool, oid)
    levels = {1: 1, 2: 2, 3: 3, 4: 1}
    if level not in levels:
        raise RequestFailed(ACTION, "Wrong lock level specified")
    if test and obj.lock is not None:
        raise RequestFailed(ACTION, str(obj.lock.time))  # test_lock_db returns the time
    if obj.lock is not None and obj.lock.owner != call.uid and not call.is_admin:
        raise RequestFailed(ACTION, "Error trying to lock the resource.")
    obj.lock = LockInfo(levels[level], call.uid, world.now(), call.req_id)
    obj.invalidate()
    if isinstance(obj, Image):
        world.save_image(obj)
    call.succeed(oid)


def unlock(call: Call, world: World, pool: Pool[T]) -> None:
    """``one.<kind>.unlock(session, id)``."""
    oid = call.params.get_int(1)
    basic_authorization(call, pool, oid, OP_NO_LOCK)
    obj = fetch(pool, oid)
    owner = -1 if call.is_admin else call.uid
    if obj.lock is not None and owner not in (-1, obj.lock.owner):
        raise RequestFailed(ACTION, "Cannot unlock: Lock is owned by another user")
    obj.lock = None
    obj.invalidate()
    if isinstance(obj, Image):
        world.save_image(obj)
    call.succeed(oid)


def new_req_id() -> int:
    """``att.req_id``: a pseudo-random number below 10000."""
    return random.randrange(10000)  # noqa: S311 - an identifier, not a secret
