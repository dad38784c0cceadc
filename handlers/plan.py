"""A plan is data: what hookd wants to change, where, and why.

Handlers produce it, the applier executes it, the CLI prints it (``hookd plan``,
``hookd reconcile --dry-run``), the log records it, and its digest is stored on the image so a
replayed event can be recognised as a no-op.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from handlers.template import REMOVE, Removal, WriteValue

Status = Literal["applied", "skipped", "unsupported", "waiting", "error"]
# The image status that matters most to an operator wins when templates disagree.
STATUS_PRIORITY: dict[str, int] = {
    "error": 0, "waiting": 1, "unsupported": 2, "applied": 3, "skipped": 4,
}

# Attributes hookd writes on the image (visible in Sunstone).
STATUS_ATTR = "HOOKD_STATUS"
REASON_ATTR = "HOOKD_REASON"
DIGEST_ATTR = "HOOKD_DIGEST"
TEMPLATES_ATTR = "HOOKD_TEMPLATES"
SOURCE_ATTR = "HOOKD_SOURCE"
OCI_DIGEST_ATTR = "HOOKD_OCI_CONFIG"
# Updates by someone else that hookd's own update may have overwritten (oned has no
# compare-and-swap): one line per template. hookd adds to it and never removes it; the
# operator removes it once they have checked.
CONCURRENT_ATTR = "HOOKD_CONCURRENT"
IMAGE_STATUS_ATTRS = (
    STATUS_ATTR, REASON_ATTR, DIGEST_ATTR, TEMPLATES_ATTR, SOURCE_ATTR, OCI_DIGEST_ATTR,
    CONCURRENT_ATTR,
)


# How a whole top-level vector (``RAW=[...]``) is kept as one value in hookd's record.
VECTOR_PREFIX = "vector:"


def readable(value: str | None) -> str | None:
    """A value as an operator reads it: a whole vector in OpenNebula's template syntax
    (``[TYPE="lxc", DATA="..."]``), anything else as it is."""
    if value is None or not value.startswith(VECTOR_PREFIX):
        return value
    try:
        items = json.loads(value[len(VECTOR_PREFIX):])
        pairs = ", ".join(f'{k}="{v}"' for k, v in items)
    except (ValueError, TypeError):
        return value
    return f"[{pairs}]"


def _loggable(value: str | None, limit: int) -> str | None:
    value = readable(value)
    if value is None or len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
    return f"<{len(value)} characters, sha256:{digest}>"


def script_summary(encoded: str | None) -> str | None:
    """What a ``START_SCRIPT_BASE64`` value carries, decoded: its size and sha256 (the same
    as ``base64 -d | sha256sum`` of the attribute); None when unset or not base64."""
    if encoded is None:
        return None
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return f"START_SCRIPT of {len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()}"


def _is_start_script(attribute: str) -> bool:
    return attribute.rsplit("/", 1)[-1] == "START_SCRIPT_BASE64"


@functools.lru_cache(maxsize=256)
def short_hash(value: str | None) -> str:
    """The first 16 hex digits of the value's sha256 ("-" for none). Cached: a burst of one
    app's imports hashes the same START_SCRIPT (kilobytes) several times per template."""
    if value is None:
        return "-"
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Change:
    """One attribute's before and after, as shown to operators (``OS/KERNEL_DS``)."""

    attribute: str
    before: str | None
    after: str | None

    def as_dict(self, limit: int = 2048) -> dict[str, str | None]:
        """For the log: values longer than ``limit`` become their size and sha256, so one
        line stays well under journald's line limit (LineMax=48K) while still identifying
        exactly what was written (``hookd plan``/``start-script`` show the full text). A
        ``START_SCRIPT_BASE64`` also gets ``before_script``/``after_script``: the decoded
        script's size and sha256 (:func:`script_summary`)."""
        out = {"attribute": self.attribute, "before": _loggable(self.before, limit),
               "after": _loggable(self.after, limit)}
        if _is_start_script(self.attribute):
            out["before_script"] = script_summary(self.before)
            out["after_script"] = script_summary(self.after)
        return out


@dataclass(frozen=True, slots=True)
class TemplateEdit:
    """One merge update of one VM template: whole top-level attributes to send."""

    template_id: int
    attributes: tuple[tuple[str, tuple[WriteValue, ...]], ...]
    changes: tuple[Change, ...]

    def payload(self) -> list[tuple[str, WriteValue]]:
        return [(name, value) for name, values in self.attributes for value in values]


@dataclass(frozen=True, slots=True)
class TemplateOutcome:
    """What hookd decided for one template that uses the image."""

    template_id: int
    template_name: str
    status: Status
    reason: str
    hypervisor: str | None = None
    edit: TemplateEdit | None = None
    notes: tuple[str, ...] = ()
    # (attribute, short hash of the value) hookd wants in place: what the digest covers,
    # without holding whole scripts in memory across a sweep of a large cloud.
    owned: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImagePlan:
    image_id: int
    status: Status | None  # None: not hookd's business (no status written at all)
    reason: str
    templates: tuple[TemplateOutcome, ...] = ()
    image_changes: tuple[Change, ...] = ()  # of the status attributes
    source: str | None = None
    digest: str = ""
    # Not hookd's business because the image is not a container image: what hookd wrote for
    # it (after a wrong decision) is to be undone.
    undo: bool = False

    @property
    def edits(self) -> tuple[TemplateEdit, ...]:
        return tuple(t.edit for t in self.templates if t.edit is not None)

    @property
    def image_attributes(self) -> tuple[tuple[str, str | Removal], ...]:
        """The status attributes to write: each change's new value, REMOVE for none."""
        return tuple((c.attribute, REMOVE if c.after is None else c.after)
                     for c in self.image_changes)

    @property
    def is_noop(self) -> bool:
        return not self.edits and not self.image_attributes


def digest_of(image_id: int, outcomes: tuple[TemplateOutcome, ...], status: str,
              source: str | None) -> str:
    """Digest of the state hookd wants: stable across runs, independent of dict order."""
    doc = {
        "image": image_id,
        "status": status,
        "source": source,
        "templates": [
            {"id": t.template_id, "hv": t.hypervisor, "status": t.status,
             "owned": sorted(t.owned)}
            for t in sorted(outcomes, key=lambda o: o.template_id)
        ],
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:32]


def render_plan(plan: ImagePlan, *, width: int = 100) -> str:
    """A human-readable diff of a plan, for ``hookd plan`` and dry runs."""
    lines = [f"image {plan.image_id}: {plan.status or 'not managed'}"
             + (f" - {plan.reason}" if plan.reason else "")]
    for outcome in plan.templates:
        head = f"  template {outcome.template_id} ({outcome.template_name})"
        if outcome.hypervisor:
            head += f" [{outcome.hypervisor}]"
        head += f": {outcome.status}"
        if outcome.reason:
            head += f" - {outcome.reason}"
        lines.append(head)
        lines.extend(f"    note: {note}" for note in outcome.notes)
        if outcome.edit is None:
            continue
        for change in outcome.edit.changes:
            lines.append(f"    {change.attribute}:")
            for sign, value in (("-", change.before), ("+", change.after)):
                summary = script_summary(value) if _is_start_script(change.attribute) else None
                if summary is not None and value is not None:
                    shown = f"{summary} ({len(value)} characters of base64)"
                else:
                    shown = _clip(value, width)
                lines.append(f"      {sign} {shown}")
    for change in plan.image_changes:
        lines.append(f"  image {change.attribute}: {_clip(change.before, width)} -> "
                     f"{_clip(change.after, width)}")
    return "\n".join(lines)


def _clip(value: str | None, width: int) -> str:
    value = readable(value)
    if value is None:
        return "(unset)"
    text = value.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."
