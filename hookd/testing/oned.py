"""The request manager: method table and the life of one call (``Request::execute``).

``Request::execute`` (``src/rm/Request.cc``, release-6.8.3), step by step:

1. read the session (``getString(0)``; a missing or non-string session is a ``-501``
   fault);
2. authenticate ``user:password``: failure answers AUTHENTICATION (0x100) and publishes
   *no* API event;
3. Raft: leader-only calls are refused by a candidate and forwarded by a follower
   (:mod:`hookd.testing.raft`); 7.4 publishes no API event for a candidate's refusal;
4. run the method (parameter type errors are ``-501`` faults and, like any fault, skip
   the API event);
5. publish ``EVENT API <call> <1|0>`` unless the call is in ``HookAPI::unsupported_calls``.

Everything runs under the world lock, so state events published while a call runs (for
example by ``one.image.enable``) are queued before that call's API event, as oned does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hookd.testing import events, rm_common, rm_image, rm_info, rm_template
from hookd.testing.faults import Failure
from hookd.testing.image_manager import ImageManager
from hookd.testing.objects import User
from hookd.testing.raft import RaftState
from hookd.testing.request import (
    AUTHENTICATION,
    AUTHORIZATION,
    INTERNAL,
    NO_EXISTS,
    OBJECT_TYPES,
    Call,
    Params,
    RequestFailed,
)
from hookd.testing.world import World
from hookd.testing.xmlrpc_protocol import FAULT_NO_SUCH_METHOD, I8, XmlRpcFault


@dataclass(frozen=True)
class Method:
    """A registered ``one.*`` method."""

    handler: Callable[[Call], None]
    auth_object: str
    leader_only: bool = True


def password_digest(password: str) -> str:
    """The core auth driver stores SHA-256 hex digests of passwords."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class Oned:
    """Dispatches ``one.*`` calls against the world with oned's semantics."""

    def __init__(
        self,
        world: World,
        manager: ImageManager,
        raft: RaftState,
        config_xml: Callable[[], str],
    ) -> None:
        self.world = world
        self.manager = manager
        self.raft = raft
        self.methods: dict[str, Method] = {}
        # One-shot actions run right after a call on an object answered (under the world
        # lock, its answer already made): what another client does between two calls.
        self.after_calls: dict[tuple[str, int], list[Callable[[], None]]] = {}
        self._register(config_xml)

    # -- registration --------------------------------------------------------------------
    def _register(self, config_xml: Callable[[], str]) -> None:
        w, m = self.world, self.manager

        def add(name: str, handler: Callable[[Call], None], kind: str, *,
                leader_only: bool = True) -> None:
            self.methods[name] = Method(handler, kind, leader_only)

        add("one.system.version", rm_info.system_version(w), "system")
        add("one.system.config", rm_info.system_config(config_xml), "system")
        add("one.zone.raftstatus", rm_info.raft_status(self.raft.to_xml), "zone",
            leader_only=False)
        add("one.user.info", rm_info.object_info(w, w.users, is_user=True), "user",
            leader_only=False)

        add("one.image.allocate", lambda c: rm_image.allocate(c, w, m), "image")
        add("one.image.info", rm_info.object_info(w, w.images), "image", leader_only=False)
        add("one.image.update", lambda c: rm_common.update_template(
            c, w, w.images, replace_mode=True), "image")
        add("one.image.delete", lambda c: rm_image.delete(c, w, m), "image")
        add("one.image.enable", lambda c: rm_image.enable(c, w, m), "image")
        add("one.image.lock", lambda c: rm_common.lock(c, w, w.images), "image")
        add("one.image.unlock", lambda c: rm_common.unlock(c, w, w.images), "image")
        add("one.image.clone", lambda c: rm_image.clone(c, w, m), "image")
        add("one.imagepool.info", rm_info.filtered_pool_info(w, w.images), "image",
            leader_only=False)

        add("one.template.allocate", lambda c: rm_template.allocate(c, w), "template")
        add("one.template.info", lambda c: rm_template.info(c, w), "template",
            leader_only=False)
        add("one.template.update", lambda c: rm_common.update_template(
            c, w, w.templates, replace_mode=False), "template")
        add("one.template.delete", lambda c: rm_template.delete(c, w, m), "template")
        add("one.template.clone", lambda c: rm_template.clone(c, w, m), "template")
        add("one.template.lock", lambda c: rm_common.lock(c, w, w.templates), "template")
        add("one.template.unlock", lambda c: rm_common.unlock(c, w, w.templates), "template")
        add("one.templatepool.info", rm_info.filtered_pool_info(w, w.templates), "template",
            leader_only=False)

        add("one.datastore.info", rm_info.object_info(w, w.datastores), "datastore",
            leader_only=False)
        add("one.datastorepool.info", rm_info.full_pool_info(w, w.datastores), "datastore",
            leader_only=False)
        add("one.host.info", rm_info.object_info(w, w.hosts), "host", leader_only=False)
        add("one.hostpool.info", rm_info.full_pool_info(w, w.hosts), "host",
            leader_only=False)
        add("one.cluster.info", rm_info.object_info(w, w.clusters), "cluster",
            leader_only=False)
        add("one.clusterpool.info", rm_info.full_pool_info(w, w.clusters), "cluster",
            leader_only=False)
        add("one.market.info", rm_info.object_info(w, w.markets), "market",
            leader_only=False)
        add("one.marketpool.info", rm_info.full_pool_info(w, w.markets), "market",
            leader_only=False)
        add("one.marketapp.info", rm_info.object_info(w, w.apps), "marketapp",
            leader_only=False)
        add("one.marketapppool.info", rm_info.filtered_pool_info(w, w.apps), "marketapp",
            leader_only=False)

    # -- authentication ------------------------------------------------------------------
    def authenticate(self, session: str) -> User | None:
        """``UserPool::authenticate`` for the core driver: ``user:password``."""
        username, sep, secret = session.partition(":")
        if not sep:
            return None
        for user in self.world.users:
            if user.name == username and user.enabled:
                return user if user.password == password_digest(secret) else None
        return None

    # -- execution -----------------------------------------------------------------------
    def execute(self, name: str, values: list[Any], injected: Failure | None = None) -> Any:
        """Run ``name``; return the response array or raise :class:`XmlRpcFault`."""
        spec = self.methods.get(name)
        if spec is None:
            raise XmlRpcFault(FAULT_NO_SUCH_METHOD, f"Method '{name}' not defined")
        params = Params(values)
        session = params.get_str(0)
        call = Call(method=name, params=params, auth_object=spec.auth_object,
                    error_cdata=self.world.flavour.api_error_cdata)
        with self.world.lock:
            call.req_id = rm_common.new_req_id()
            user = self.authenticate(session)
            if user is None:
                call.fail(AUTHENTICATION)
                return call.response
            call.uid, call.gid = user.oid, user.gid
            call.uname, call.gname = user.name, user.gname
            call.group_ids = set(user.groups)
            forwarded = False
            publish = name not in events.UNSUPPORTED_API_CALLS
            if injected is not None and injected.mode in ("locked", "error"):
                self._inject(call, injected)
            elif spec.leader_only and self.raft.role == "candidate":
                call.resp_msg = "Cannot process request, oned cluster in election mode"
                call.fail(INTERNAL)
                # 7.4.0 returns right after the failure response, before the API event
                # (RequestXRPC::execute, src/rm/xml-rpc/RequestXRPC.cc:125-132); 6.8.3 falls
                # through to HookAPI::format_message (src/rm/Request.cc:435-439).
                publish = publish and self.world.flavour.api_event_in_election
            else:
                forwarded = spec.leader_only and self.raft.role == "follower"
                try:
                    spec.handler(call)
                except RequestFailed as failure:
                    call.fail_from(failure)
                if call.success and spec.leader_only:
                    self.raft.record_write()
            if publish:
                in_values = [params.as_string(i) for i in range(len(params))]
                if forwarded:
                    message = events.api_message(name, False, in_values, "", "")
                else:
                    message = events.api_message(
                        name, call.success, in_values, call.retval_xml, call.extra_xml
                    )
                self.world.emit_api(message)
            first = values[1] if len(values) > 1 else None
            if self.after_calls and call.success and isinstance(first, int):
                for action in self.after_calls.pop((name, first), []):
                    action()
            return call.response

    def _inject(self, call: Call, failure: Failure) -> None:
        """Answer a queued ``locked``/``error`` failure instead of running the call."""
        first = call.params.values[1] if len(call.params) > 1 else None
        oid = first if isinstance(first, int) and not isinstance(first, bool | I8) else -1
        if failure.mode == "locked":
            obj_type = OBJECT_TYPES.get(call.auth_object, call.auth_object.upper())
            call.resp_msg = f"{obj_type} is locked. [{oid}]"
            call.fail(AUTHORIZATION)
            return
        if failure.code == NO_EXISTS:
            call.resp_id = oid
        call.resp_msg = failure.message
        call.fail(failure.code)
