"""Event intake: oned's ZeroMQ stream in, triggers out. Knows ZeroMQ and HOOK_MESSAGE only.

oned's hook-manager driver (src/hm_mad/one_hm.rb) publishes every event as a 2-frame
message: an ASCII key and the single-line base64 of a ``<HOOK_MESSAGE>``. Keys hookd
subscribes to (one_hm.rb builds them from ``HookStateImage`` and ``HookAPI``,
src/hm/HookStateImage.cc and src/hm/HookAPI.cc; recorded from a real oned 6.8.3 and 7.4.0):

* ``EVENT STATE IMAGE/READY//<id> `` (trailing space) — an image reached READY; the body
  embeds the image as oned serialised it at the transition (``HookStateImage``);
* ``EVENT API <call> 1`` for the calls that create, change or delete VM templates, change
  or delete images, or change which hosts and datastores a cluster has.

Events are hints: a trigger only says "look at image N" (or template N); the object's
current state is read over XML-RPC by the reconciler. Nothing in an event body is believed:
a local user who binds the event port while oned restarts can publish anything.
API bodies carry IN parameters unescaped, so a template holding ``&`` or ``<`` makes the body
malformed (recorded on 6.8.3): numeric parameters are read leniently, free text never.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from hookd.triggers import READY, Cause, Why
from hookd.xmlsafe import UnsafeXml, parse

TriggerKind = Literal["image", "template", "template_deleted", "image_deleted", "world"]

_READY_KEY = re.compile(rb"^EVENT STATE IMAGE/READY//(\d{1,10}) $")
_API_KEY = re.compile(rb"^EVENT API (one(?:\.[a-z_]{1,40}){2,3}) ([01])$")
_PARAM = re.compile(
    r"<PARAMETER><POSITION>(\d{1,3})</POSITION><TYPE>(IN|OUT)</TYPE>"
    r"<VALUE>(-?\d{1,10})</VALUE></PARAMETER>")

# call -> (trigger kind, where the object id is: ("IN", position) or ("OUT", position))
API_CALLS: dict[str, tuple[TriggerKind, tuple[str, int]]] = {
    "one.template.allocate": ("template", ("OUT", 2)),
    "one.template.clone": ("template", ("OUT", 2)),
    "one.template.update": ("template", ("IN", 2)),
    "one.template.chown": ("template", ("IN", 2)),
    "one.template.delete": ("template_deleted", ("IN", 2)),
    "one.image.update": ("image", ("IN", 2)),
    "one.image.rename": ("image", ("IN", 2)),
    "one.image.chown": ("image", ("IN", 2)),
    "one.image.delete": ("image_deleted", ("IN", 2)),
    "one.host.allocate": ("world", ("OUT", 2)),
    "one.host.delete": ("world", ("IN", 2)),
    "one.cluster.addhost": ("world", ("IN", 2)),
    "one.cluster.delhost": ("world", ("IN", 2)),
    "one.cluster.adddatastore": ("world", ("IN", 2)),
    "one.cluster.deldatastore": ("world", ("IN", 2)),
}


#: ZMQ SUB filters (byte prefixes). Only successful API calls matter.
SUBSCRIPTIONS = (b"EVENT STATE IMAGE/READY/",
                 *(f"EVENT API {call} 1".encode() for call in API_CALLS))


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: TriggerKind
    object_id: int
    why: Why
    raw: bytes = b""  # the decoded API body, for echo suppression


class Malformed(Exception):
    """A message hookd will not act on; ``reason`` is short and goes to a metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


MAX_KEY_BYTES = 256


def decode(frames: list[bytes], max_bytes: int = 4 * 1024 * 1024) -> Trigger | None:
    """Turn one ZMQ multipart message into a trigger, None (not ours), or raise Malformed.

    ``max_bytes`` bounds the (base64) content, hence the decoded body too."""
    if len(frames) != 2:
        raise Malformed("frames", f"{len(frames)} frames instead of 2")
    key, content = frames
    if len(key) > MAX_KEY_BYTES:
        raise Malformed("key_size", f"key of {len(key)} bytes")
    if len(content) > max_bytes:
        raise Malformed("size", f"content of {len(content)} bytes")
    ready = _READY_KEY.match(key)
    api = None if ready else _API_KEY.match(key)
    if ready is None and api is None:
        if key.startswith(SUBSCRIPTIONS):
            # It passed our subscription filter but is not shaped like oned's keys.
            raise Malformed("key", "key does not have oned's format")
        return None
    try:
        body = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("base64", "content is not base64") from None
    if ready is not None:
        return _state_trigger(int(ready.group(1)), body, max_bytes)
    call = api.group(1).decode() if api is not None else ""
    if api is None or api.group(2) != b"1" or call not in API_CALLS:
        return None
    return _api_trigger(call, body)


def _state_trigger(image_id: int, body: bytes, max_bytes: int) -> Trigger:
    try:
        root = parse(body, max_bytes=max_bytes)
    except UnsafeXml as exc:
        raise Malformed("xml", exc.reason) from None
    if root.tag != "HOOK_MESSAGE":
        raise Malformed("root", f"root element <{root.tag}>")
    if (root.findtext("HOOK_TYPE") != "STATE" or root.findtext("HOOK_OBJECT") != "IMAGE"
            or root.findtext("STATE") != "READY"):
        raise Malformed("fields", "not an IMAGE READY state message")
    resource = (root.findtext("RESOURCE_ID") or "").strip()
    if not resource.isdigit() or int(resource) != image_id:
        raise Malformed("id", "RESOURCE_ID does not match the key")
    # The body embeds the image as oned serialised it, but anyone who can bind the event
    # port can publish a READY event: the event only says which image to look at, and
    # everything hookd decides is read from oned over XML-RPC.
    return Trigger("image", image_id, READY)


def _api_trigger(call: str, body: bytes) -> Trigger:
    kind, (direction, position) = API_CALLS[call]
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise Malformed("xml", "body declares a DOCTYPE or ENTITY")
    text = body.decode("utf-8", errors="replace")
    if not text.startswith("<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>" + call + "</CALL>"):
        raise Malformed("fields", "API message does not start as oned writes it")
    value = _parameter(text, direction, position)
    if value is None:
        raise Malformed("id", f"no numeric {direction} parameter {position}")
    return Trigger(kind, value, Why(Cause.EVENT, call, call), raw=body)


def _parameter(text: str, direction: str, position: int) -> int | None:
    """A numeric parameter, read without trusting the document's structure.

    IN parameters precede any free text of a call (position 2 is the object id), so the
    first match is authoritative; OUT parameters are written after all IN ones, so the last
    match is: free text in between cannot forge them.
    """
    try:
        root = parse(text.encode("utf-8"))
    except UnsafeXml:
        root = None
    if root is not None:
        # Direct children only: a template inside a VALUE may contain look-alike elements.
        values = [(p.findtext("VALUE") or "").strip()
                  for p in root.findall("CALL_INFO/PARAMETERS/PARAMETER")
                  if p.findtext("TYPE") == direction and p.findtext("POSITION") == str(position)]
    else:
        values = [m.group(3) for m in _PARAM.finditer(text)
                  if m.group(2) == direction and int(m.group(1)) == position]
    if not values:
        return None
    value = values[0 if direction == "IN" else -1]
    return int(value) if re.fullmatch(r"-?\d{1,10}", value) else None


# -- echo suppression ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sent:
    """What is kept of a payload hookd sent: never the payload itself (a template with a
    START_SCRIPT is tens of kilobytes; a burst sends thousands within the TTL)."""

    when: float
    length: int
    head: bytes  # the first bytes, to find candidate positions in an event body
    digest: bytes

    def found_in(self, raw: bytes) -> bool:
        pos = raw.find(self.head)
        while pos != -1:
            if _fingerprint(raw[pos:pos + self.length]) == self.digest:
                return True
            pos = raw.find(self.head, pos + 1)
        return False


_HEAD = 64


def _fingerprint(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class _Watch:
    """A template hookd is reading and then writing: the window oned cannot close."""

    opened: float
    image_id: int | None = None
    rewritten: tuple[str, ...] = ()  # the attributes hookd's update replaces whole
    sent: float | None = None  # when hookd's update was sent (its echo closes the watch)
    foreign: list[float] = field(default_factory=list)  # others' updates seen meanwhile


class EchoFilter:
    """Recognise the API events caused by hookd's own updates, and watch for others'.

    The applier registers the exact template text it sent; oned writes IN parameters
    verbatim into the API event body, so finding that text (with the object id) in the body
    identifies our own call. A person's update cannot match unless it sent byte-identical
    content, and then ignoring it changes nothing.

    **Concurrent changes.** oned has no compare-and-swap: a person's update that oned runs
    between hookd's ``one.template.info`` and hookd's ``one.template.update`` of the same
    template loses what it changed in the attributes hookd rewrites whole (a vector such as
    CONTEXT). oned's hook manager publishes API events in the order the calls finish, so
    such an update's event arrives after hookd started reading and before the echo of
    hookd's own update: :meth:`watch` opens that window, the echo closes it, and an update
    by someone else seen inside it is kept for :meth:`concurrent_changes` (and reported to
    ``on_concurrent``). It may also be an update oned ran just before hookd's read (its
    event still on its way), so it is reported as a change that *may* have been lost.
    """

    def __init__(self, ttl: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, note_ttl: float = 3600.0) -> None:
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._note_ttl = note_ttl
        self._lock = threading.Lock()
        self._expected: dict[tuple[str, int], list[_Sent]] = {}
        self._watches: dict[int, _Watch] = {}
        self._concurrent: dict[int, dict[int, tuple[float, str]]] = {}
        self.on_concurrent: Callable[[int, int], None] = lambda image_id, template_id: None

    def expect(self, call: str, object_id: int, payload: str, *, image_id: int | None = None,
               rewritten: tuple[str, ...] = ()) -> None:
        now = self._clock()
        data = payload.encode("utf-8")
        sent = _Sent(now, len(data), data[:_HEAD], _fingerprint(data))
        with self._lock:
            entries = [e for e in self._expected.get((call, object_id), [])
                       if now - e.when < self._ttl]
            entries.append(sent)
            self._expected[(call, object_id)] = entries[-8:]
            if len(self._expected) > 100_000:  # keep only the objects with live entries
                self._expected = {k: v for k, v in self._expected.items()
                                  if any(now - e.when < self._ttl for e in v)}
            watch = self._watches.get(object_id) if call == _TEMPLATE_UPDATE else None
            if watch is not None:
                watch.sent, watch.image_id, watch.rewritten = now, image_id, rewritten

    # -- the read-to-write window --------------------------------------------------------
    def watch(self, template_ids: Iterable[int]) -> None:
        """hookd is about to read these templates in order to write them."""
        now = self._clock()
        with self._lock:
            for template_id in template_ids:
                self._watches[template_id] = _Watch(now)

    def unwatch(self, template_ids: Iterable[int]) -> None:
        """The reconcile is over: a template hookd did not write is no longer watched (one it
        wrote stays watched until the echo of its update arrives, or ``ttl``)."""
        with self._lock:
            for template_id in template_ids:
                watch = self._watches.get(template_id)
                if watch is not None and watch.sent is None:
                    del self._watches[template_id]

    def concurrent_changes(self, image_id: int) -> dict[int, str]:
        """Template id -> a sentence naming what a concurrent change may have lost."""
        now = self._wall()
        with self._lock:
            notes = self._concurrent.get(image_id)
            if not notes:
                return {}
            for template_id in [t for t, (when, _) in notes.items()
                                if now - when >= self._note_ttl]:
                del notes[template_id]
            if not notes:
                del self._concurrent[image_id]
            return {t: note for t, (_, note) in notes.items()}

    def awaiting_echo(self) -> bool:
        """Whether an update hookd sent still waits for its echo (its window is open)."""
        with self._lock:
            return any(w.sent is not None for w in self._watches.values())

    def noted_images(self) -> list[int]:
        """Images with concurrent-change notes not yet recorded on them."""
        with self._lock:
            return sorted(self._concurrent)

    def forget_concurrent(self, image_id: int) -> None:
        """The notes are recorded on the image (HOOKD_CONCURRENT): no need to keep them."""
        with self._lock:
            self._concurrent.pop(image_id, None)

    def _close(self, template_id: int) -> None:
        watch = self._watches.pop(template_id, None)
        if watch is None or not watch.foreign or watch.image_id is None:
            return
        when = self._wall()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        what = ", ".join(watch.rewritten) or "the attributes it rewrote"
        note = (f"someone else updated this template while hookd was fixing it ({stamp}); "
                f"oned has no compare-and-swap, so a change they made to {what} may have "
                f"been overwritten: check {what}")
        self._concurrent.setdefault(watch.image_id, {})[template_id] = (when, note)
        image_id = watch.image_id
        self._lock.release()
        try:
            self.on_concurrent(image_id, template_id)
        finally:
            self._lock.acquire()

    def is_echo(self, trigger: Trigger) -> bool:
        if not trigger.raw:
            return False
        call = trigger.why.call
        key = (call or "", trigger.object_id)
        now = self._clock()
        with self._lock:
            self._expire(now)
            entries = self._expected.get(key)
            for i, sent in enumerate(entries or ()):
                if now - sent.when < self._ttl and sent.found_in(trigger.raw):
                    del entries[i]  # type: ignore[union-attr]
                    if not entries:
                        del self._expected[key]
                    if call == _TEMPLATE_UPDATE:
                        self._close(trigger.object_id)
                    return True
            watch = (self._watches.get(trigger.object_id)
                     if call == _TEMPLATE_UPDATE else None)
            if watch is not None:
                watch.foreign.append(now)
        return False

    def _expire(self, now: float) -> None:
        for template_id in [t for t, w in self._watches.items()
                            if now - (w.sent if w.sent is not None else w.opened) >= self._ttl]:
            self._close(template_id)


_TEMPLATE_UPDATE = "one.template.update"
