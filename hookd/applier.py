"""The applier: the only code that writes to oned.

A plan becomes at most one ``one.template.update`` (merge mode, XML form) per changed template
and at most one ``one.image.update`` (merge mode) for the image's status attributes - and
nothing at all when the plan is a no-op, so replaying an event changes nothing. Every write
is logged with the before and after of each attribute (``hookd history`` reads those lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from handlers.plan import ImagePlan
from handlers.record import RECORD_ATTR
from hookd.client import OneClient
from hookd.documents import to_xml
from hookd.intake import EchoFilter
from hookd.logs import get_logger

log = get_logger(__name__)


@dataclass
class ApplyResult:
    templates_updated: list[int] = field(default_factory=list)


class Applier:
    def __init__(self, client: OneClient, echo: EchoFilter | None = None,
                 on_fix: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._echo = echo
        self._on_fix = on_fix

    def apply(self, plan: ImagePlan, *, trigger: str = "") -> ApplyResult:
        result = ApplyResult()
        for outcome in plan.templates:
            edit = outcome.edit
            if edit is None:
                continue
            payload = to_xml(edit.payload())
            if self._echo is not None:
                rewritten = tuple(sorted({name for name, _ in edit.attributes
                                          if name != RECORD_ATTR}))
                self._echo.expect("one.template.update", edit.template_id, payload,
                                  image_id=plan.image_id, rewritten=rewritten)
            self._client.update_template(edit.template_id, payload)
            result.templates_updated.append(edit.template_id)
            log.info(
                "template.fixed",
                image_id=plan.image_id,
                template_id=edit.template_id,
                template_name=outcome.template_name,
                hypervisor=outcome.hypervisor,
                action="update",
                status=outcome.status,
                changes=[c.as_dict() for c in edit.changes],
                reason=outcome.reason or "; ".join(outcome.notes),
                trigger=trigger,
            )
            if self._on_fix is not None and outcome.hypervisor:
                self._on_fix(outcome.hypervisor)
        if plan.image_attributes:
            payload = to_xml(plan.image_attributes)
            if self._echo is not None:
                self._echo.expect("one.image.update", plan.image_id, payload)
            self._client.update_image(plan.image_id, payload)
            log.info(
                "image.status",
                image_id=plan.image_id,
                status=plan.status,
                reason=plan.reason,
                templates=[t.template_id for t in plan.templates],
                changes=[c.as_dict() for c in plan.image_changes],
                source=plan.source,
                digest=plan.digest,
                trigger=trigger,
            )
        return result
