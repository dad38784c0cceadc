"""Small builders for facts, so planner tests read like the situations they describe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from handlers.facts import (
    AppFacts,
    DatastoreFacts,
    HostFacts,
    ImageFacts,
    MarketFacts,
    VmTemplateFacts,
)
from handlers.model import KernelChoice, OciFacts, OciProcessFacts, PlannerSettings, World
from handlers.plan import ImagePlan
from handlers.template import Attribute, Removal, Template, Value, Vector

AttrSpec = tuple[str, str | Mapping[str, str]]

DOCKER_PATH = "docker://nginx?size=2048&filesystem=ext4&format=raw"
LXD_PATH = ("lxd://https://images.linuxcontainers.org/images/debian/bookworm/amd64/default/"
            "20240101_05:24/rootfs.tar.xz?size=2048&filesystem=ext4&format=raw")
TURNKEY_PATH = ("lxd://http://mirror.turnkeylinux.org//turnkeylinux/images/proxmox//"
                "debian-11-turnkey-wordpress_17.1-1_amd64.tar.gz?size=5120&filesystem=ext4"
                "&format=raw")
MARKETS = {
    "dockerhub": MarketFacts(3, "DockerHub", "dockerhub"),
    "docker_registry": MarketFacts(4, "Local Registry", "docker_registry"),
    "turnkeylinux": MarketFacts(2, "TurnKey Linux Containers", "turnkeylinux"),
    "linuxcontainers": MarketFacts(1, "Linux Containers", "linuxcontainers"),
    "one": MarketFacts(0, "OpenNebula Public", "one"),
}


def template(attrs: Iterable[AttrSpec]) -> Template:
    out: list[Attribute] = []
    for name, value in attrs:
        v: Value = value if isinstance(value, str) else Vector.of(value)
        out.append(Attribute(name.upper(), v))
    return Template(tuple(out))


def image(image_id: int = 10, *, name: str = "nginx", type_: int = 0, state: int = 1,
          ds: int = 101, path: str = DOCKER_PATH, uid: int = 0, uname: str = "oneadmin",
          attrs: Iterable[AttrSpec] = (("DEV_PREFIX", "vd"), ("FROM_APP", "0")),
          source: str = "dummy_path") -> ImageFacts:
    return ImageFacts(id=image_id, name=name, uid=uid, uname=uname, type=type_, state=state,
                      datastore_id=ds, datastore="images", path=path, source=source,
                      template=template(attrs))


DOCKERHUB_VM = (
    ("CPU", "1"), ("MEMORY", "768"),
    ("GRAPHICS", {"LISTEN": "0.0.0.0", "TYPE": "vnc"}),
    ("CONTEXT", {"NETWORK": "YES", "SSH_PUBLIC_KEY": "$USER[SSH_PUBLIC_KEY]",
                 "SET_HOSTNAME": "$NAME"}),
    ("OS", {"KERNEL_CMD": "console=ttyS0 reboot=k panic=1"}),
)


def vmtemplate(template_id: int = 5, *, name: str = "nginx", uid: int = 0,
               uname: str = "oneadmin", disks: Iterable[Mapping[str, str]] = ({"IMAGE_ID": "10"},),
               attrs: Iterable[AttrSpec] = DOCKERHUB_VM) -> VmTemplateFacts:
    specs: list[AttrSpec] = list(attrs) + [("DISK", d) for d in disks]
    return VmTemplateFacts(template_id, name, uid, uname, template(specs))


def kernel(image_id: int = 0, usable: bool = True, reason: str = "",
           warnings: tuple[str, ...] = ()) -> KernelChoice:
    return KernelChoice(image_id, f"kernel-{image_id}", usable, reason, warnings)


SCRIPT = "#!/bin/sh\necho start nginx\n"
DEFAULT_OCI = OciProcessFacts(SCRIPT, "sha256:abc", "registry:docker.io")


def world(hypervisors: Iterable[str] = ("kvm",), *, market: str | None = "dockerhub",
          kernels: Mapping[str, KernelChoice | None] | None = None,
          initrds: Mapping[str, KernelChoice | None] | None = None,
          oci: OciFacts | None = DEFAULT_OCI,
          version: tuple[int, int, int] = (6, 8, 3),
          disk_images: Mapping[int, ImageFacts] | None = None) -> World:
    hosts = tuple(HostFacts(i, f"{hv}-host", hv, 100)
                  for i, hv in enumerate(hypervisors))
    app = AppFacts(0, "nginx", MARKETS[market].id, DOCKER_PATH) if market else None
    return World(
        one_version=version,
        datastore=DatastoreFacts(101, "images", 0, (100,)),
        hosts=hosts,
        app=app,
        market=MARKETS[market] if market else None,
        kernels=kernels if kernels is not None else {"kvm": kernel(0), "firecracker": kernel(1)},
        initrds=initrds or {},
        disk_images=disk_images or {},
        oci=oci,
    )


def apply_edits(tmpl: VmTemplateFacts, plan: ImagePlan) -> VmTemplateFacts:
    """What oned's merge update does with the plan's payload for this template."""
    result = tmpl.template
    for edit in plan.edits:
        if edit.template_id != tmpl.id:
            continue
        for name, values in edit.attributes:
            # REMOVE is an empty vector to oned: the merge erases the name, adds nothing.
            result = result.replaced(name, [v for v in values if not isinstance(v, Removal)])
    return VmTemplateFacts(tmpl.id, tmpl.name, tmpl.uid, tmpl.uname, result)


def apply_status(img: ImageFacts, plan: ImagePlan) -> ImageFacts:
    result = img.template
    for name, value in plan.image_attributes:
        result = result.replaced(name, [] if isinstance(value, Removal) else [value])
    return ImageFacts(img.id, img.name, img.uid, img.uname, img.type, img.state,
                      img.datastore_id, img.datastore, img.path, img.source, result)


DEFAULTS = PlannerSettings()
