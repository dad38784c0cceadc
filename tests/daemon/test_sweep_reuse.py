"""A periodic sweep of an unchanged pool plans nothing again, and any change is planned.

The planner is pure, so a sweep reuses the outcome of the previous sweep for a template
whose inputs (the template document, the image, the world, the settings) are exactly the
same. These tests count the calls to ``plan_template`` through real XML-RPC against the
simulator, and check that every kind of input change is seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import planner
from handlers.model import PlannerSettings
from handlers.plan import TemplateOutcome
from hookd.config import from_mapping
from hookd.daemon import Components, build
from hookd.logs import configure_logging
from hookd.testing.daemon_config import simulator_config
from hookd.testing.registry import FakeRegistry, seeded_registry
from hookd.testing.simulator import Simulator

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    reg = seeded_registry()
    yield reg
    reg.stop()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(one_version="6.8", ready_delay=0.0).start()
    yield s
    s.stop()


def _components(sim: Simulator, registry: FakeRegistry, tmp: Path) -> Components:
    config = from_mapping(simulator_config(tmp, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url,
                                           session=sim.session, registry=registry,
                                           kernels={"kvm": "kernel-kvm"}))
    configure_logging(level="warning")
    return build(config)


class _Counter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = planner.plan_template

        def counting(*args: object, **kwargs: object) -> TemplateOutcome:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(planner, "plan_template", counting)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def _sweep(c: Components) -> list[int]:
    submitted: list[int] = []
    c.engine.sweep(lambda image_id, _why: submitted.append(image_id))
    return submitted


def test_unchanged_pool_is_not_planned_again_and_changes_are(
        sim: Simulator, registry: FakeRegistry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seed = sim.seed_info
    fixed = [sim.export_app(seed.apps["dockerhub/nginx"], seed.datastores["kvm-images"],
                            name=f"nginx-{n}") for n in range(3)]
    for image_id, _ in fixed:
        assert sim.wait_image_state(image_id, "READY")
    c = _components(sim, registry, tmp_path)
    counter = _Counter(monkeypatch)
    for image_id in _sweep(c):
        c.engine.reconcile_image(image_id, final=True)
    counter.take()

    # The fingerprint is made of reprs: none may hold an object's address.
    image = c.client.image(fixed[0][0])
    assert " at 0x" not in repr(c.world.base_world(image)) + repr(image)

    # Fixed, nothing changed: the next sweep fills its memory, the one after plans nothing.
    assert _sweep(c) == []
    counter.take()
    assert _sweep(c) == []
    assert counter.take() == 0

    # A person edits one template: that one is planned again (and still needs nothing).
    template_id = fixed[0][1]
    assert template_id is not None
    ok, *_ = sim.call("one.template.update", template_id, 'MEMORY="1024"', 1)
    assert ok
    assert _sweep(c) == []
    assert counter.take() == 1

    # A person removes hookd's ROOT: planned again, and the image is submitted.
    ok, *_ = sim.call("one.template.update", template_id,
                      'OS=[KERNEL_DS="$FILE[IMAGE_ID=0]", KERNEL_CMD="rw console=tty0"]', 1)
    assert ok
    assert _sweep(c) == [fixed[0][0]]
    assert counter.take() == 1

    # The image changes (an attribute on it): its template is planned again.
    ok, *_ = sim.call("one.image.update", fixed[1][0], 'DESCRIPTION="changed"', 1)
    assert ok
    # fixed[0] is unchanged since the last sweep: not planned, and still submitted.
    assert _sweep(c) == [fixed[0][0]]
    assert counter.take() == 1

    # The world changes (the settings after a reload): everything is planned again.
    c.engine.reconfigure(PlannerSettings(prefer=("kvm", "lxc")), None)
    _sweep(c)
    assert counter.take() == 3
