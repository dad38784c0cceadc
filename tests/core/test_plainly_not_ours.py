"""A sweep skips reading most images in full: the quick look must agree with the planner.

``documents.plainly_not_ours`` may only say yes for an image that the full path (``documents
.image`` then ``planner.start``) would find not hookd's business, with no status to take back
and no kernel name to note: otherwise a sweep would miss a fix or an undo.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from handlers.facts import TYPE_KERNEL, TYPE_RAMDISK, AppFacts, MarketFacts
from handlers.model import PlannerSettings, World
from handlers.plan import IMAGE_STATUS_ATTRS, ImagePlan
from handlers.planner import start
from hookd import documents

NAMES = ("debian", "vmlinux-kvm", "nginx")
WANTED = frozenset({"vmlinux-kvm"})
PATHS = ("", "/var/tmp/disk.img", "docker://nginx?size=1024", "  DOCKER://redis ",
         "dockerfile://x", "lxd://https://images/debian", "https://example.com/a.qcow2")
ATTRIBUTES = st.sampled_from([
    ("FROM_APP", "3"), ("HOOKD_MANAGE", "yes"), ("HOOKD_MANAGE", "no"), ("HOOKD_MANAGE", ""),
    ("hookd_manage", "yes"), ("HOOKD_STATUS", "applied"), ("HOOKD_REASON", ""),
    ("HOOKD_OTHER", "x"), ("CONTAINER", "yes"), ("DESCRIPTION", "docker://not-the-path"),
    ("DEV_PREFIX", "vd"),
])


def image_xml(image_id: int, name: str, type_: int, state: int, datastore: int, path: str,
              attributes: list[tuple[str, str]]) -> etree._Element:
    template = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in attributes)
    return etree.fromstring(
        f"<IMAGE><ID>{image_id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>"
        f"<NAME>{escape(name)}</NAME><TYPE>{type_}</TYPE><STATE>{state}</STATE>"
        f"<PREV_STATE>0</PREV_STATE><DATASTORE_ID>{datastore}</DATASTORE_ID>"
        f"<DATASTORE>ds</DATASTORE><PATH>{escape(path)}</PATH><SOURCE>/s</SOURCE>"
        f"<PERSISTENT>0</PERSISTENT><TEMPLATE>{template}</TEMPLATE></IMAGE>")


# Weighted towards what a skip could get wrong: root-filesystem types, usable states, plain
# PATHs, no scope, few attributes (each case is cheap: a thousand take about a second).
@settings(max_examples=1500, deadline=None, derandomize=True)
@given(name=st.sampled_from(NAMES), type_=st.sampled_from([0, 0, 2, 1, 5, 6]),
       state=st.sampled_from([1, 1, 2, 8, 0, 4, 5]), datastore=st.sampled_from([1, 100, 101]),
       path=st.sampled_from(PATHS[:2] * 3 + PATHS),
       attributes=st.lists(ATTRIBUTES, max_size=2, unique_by=lambda kv: kv[0]),
       scope=st.sampled_from([frozenset(), frozenset(), frozenset({100}),
                              frozenset({100, 101})]),
       container_market=st.booleans(), opt=st.sampled_from(["HOOKD_MANAGE", "CONTAINER"]))
def test_a_skipped_image_is_one_the_planner_leaves_alone(
        name: str, type_: int, state: int, datastore: int, path: str,
        attributes: list[tuple[str, str]], scope: frozenset[int],
        container_market: bool, opt: str) -> None:
    element = image_xml(7, name, type_, state, datastore, path, attributes)
    planner = PlannerSettings(scope_datastores=scope, opt_attribute=opt)
    skipped = documents.plainly_not_ours(element, opt_attribute=planner.opt_attribute,
                                         scope=scope, names=WANTED)
    image = documents.image(element)
    world = World()
    if image.from_app is not None:
        world = World(app=AppFacts(3, "app", 0, "docker://nginx"),
                      market=MarketFacts(0, "hub", "dockerhub" if container_market else "http"))
    decided = start(image, world, planner)
    has_status = any(attr.name in IMAGE_STATUS_ATTRS for attr in image.template)
    kernel_name = image.type in (TYPE_KERNEL, TYPE_RAMDISK) and image.name in WANTED
    if skipped:
        assert isinstance(decided, ImagePlan) and decided.undo, decided
        assert not has_status and not kernel_name


def test_an_ordinary_image_is_skipped_and_a_docker_one_is_not() -> None:
    plain = image_xml(1, "debian", 0, 1, 1, "/var/tmp/disk.img", [("DEV_PREFIX", "vd")])
    docker = image_xml(2, "nginx", 0, 1, 1, "docker://nginx", [])
    fixed = image_xml(3, "debian", 0, 1, 1, "/var/tmp/disk.img", [("HOOKD_STATUS", "applied")])
    for element, expected in ((plain, True), (docker, False), (fixed, False)):
        assert documents.plainly_not_ours(element, opt_attribute="HOOKD_MANAGE",
                                          scope=frozenset(), names=WANTED) is expected
