"""The boot proof's scenario: one Docker Hub image, its config, the guest's accounts, and
what the booted app must report. Shared by the boot tests (and by any test that boots a
template hookd produced elsewhere, e.g. against the OpenNebula simulator)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from handlers.facts import VmTemplateFacts
from handlers.model import KernelChoice, OciProcessFacts, PlannerSettings
from handlers.plan import ImagePlan
from handlers.planner import plan_for
from handlers.start_script import build_start_script, parse_oci_config
from handlers.template import Vector
from hookd.documents import to_xml
from hookd.testing.boot import REPORT_APP, BootResult, GuestGroup, GuestUser
from tests.core import factories as f

# Image ids as OpenNebula would have them: the Docker Hub image (its raw disk), and the
# Debian kernel and the initrd registered as KERNEL and RAMDISK images in a files datastore.
ROOTFS_IMAGE_ID = 10
KERNEL_IMAGE_ID = 100
INITRD_IMAGE_ID = 101
TEMPLATE_ID = 5

APP_USER = GuestUser("app", uid=1001, gid=2002, home="/home/app")
APP_GROUP = GuestGroup("appgrp", gid=2002)

#: The image config (as a registry serves it): Entrypoint + Cmd with spaces, quotes, an
#: empty element, shell syntax and a newline; Env with spaces, quotes, `$` and an empty
#: value; a WorkingDir the root filesystem does not have; User as name:group of an
#: unprivileged user.
IMAGE_CONFIG: Mapping[str, object] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": [REPORT_APP, "--greeting", "hello world"],
        "Cmd": ["it's \"quoted\"", "$HOME and `date`", "", "  two\nlines  "],
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "GREETING=hello from the image",
            "QUOTES=it's \"double\" and 'single'",
            "DOLLAR=$PATH stays literal",
            "EMPTY=",
        ],
        "WorkingDir": "/srv/app data",
        "User": "app:appgrp",
    },
}


def image_config() -> dict[str, object]:
    return copy.deepcopy(dict(IMAGE_CONFIG))


def config_digest(doc: Mapping[str, object]) -> str:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def start_script(doc: Mapping[str, object]) -> str:
    """The START_SCRIPT hookd injects for this image config (handlers.start_script)."""
    return build_start_script(parse_oci_config(doc))


@dataclass(frozen=True)
class PlannedTemplate:
    plan: ImagePlan
    before: VmTemplateFacts
    after: VmTemplateFacts

    @property
    def xml(self) -> str:
        return oned_template_xml(self.after)


def plan_dockerhub_template(hypervisor: str, doc: Mapping[str, object]) -> PlannedTemplate:
    """The template a Docker Hub export creates (DockerMarket VMTEMPLATE64 + the DISK),
    after hookd's planner ran for ``hypervisor`` with the Debian kernel (and, for KVM, the
    initrd) registered as images, and its merge update was applied."""
    kernel = KernelChoice(KERNEL_IMAGE_ID, "debian-cloud-vmlinux", True)
    initrd = KernelChoice(INITRD_IMAGE_ID, "hookd-boot-initrd", True)
    world = f.world(
        [hypervisor],
        kernels={hypervisor: kernel},
        initrds={"kvm": initrd} if hypervisor == "kvm" else {},
        oci=OciProcessFacts(start_script(doc), config_digest(doc), "registry:docker.io"),
    )
    image = f.image(ROOTFS_IMAGE_ID)
    before = f.vmtemplate(TEMPLATE_ID, disks=({"IMAGE_ID": str(ROOTFS_IMAGE_ID)},))
    plan = plan_for(image, [before], world, PlannerSettings())
    return PlannedTemplate(plan, before, f.apply_edits(before, plan))


#: The Linux Containers image on OpenNebula 7.4: imported from images.linuxcontainers.org,
#: no DEV_PREFIX (so oned's default, ``sd``, would apply), a raw ext4 disk.
LXC_IMAGE_NAME = "debian_bookworm"


def plan_linuxcontainers_template(version: tuple[int, int, int] = (7, 4, 0)) -> PlannedTemplate:
    """The Linux Containers Debian import on a KVM-only 7.4 cloud, after hookd's planner ran
    with the Debian kernel and the initrd registered as images, and its merge update was
    applied: the template is the one the export created (7.4's linuxcontainers VMTEMPLATE64,
    pinned to LXC, plus the image's DISK), which hookd re-targets to KVM."""
    from dataclasses import replace

    from hookd.documents import parse_attributes
    from hookd.testing.seed import lxd_vmtemplate_7

    kernel = KernelChoice(KERNEL_IMAGE_ID, "debian-cloud-vmlinux", True)
    initrd = KernelChoice(INITRD_IMAGE_ID, "hookd-boot-initrd", True)
    app_template = parse_attributes(lxd_vmtemplate_7())
    world = f.world(["kvm"], market="linuxcontainers", oci=None, version=version,
                    kernels={"kvm": kernel}, initrds={"kvm": initrd})
    assert world.app is not None
    world = replace(world, app=replace(world.app, vm_template=app_template))
    # oned 7.4 gives an OS image without DEV_PREFIX its DEFAULT_DEVICE_PREFIX (Image::insert).
    image = f.image(ROOTFS_IMAGE_ID, name=LXC_IMAGE_NAME, path=f.LXD_PATH,
                    attrs=[("DEV_PREFIX", "sd"), ("FROM_APP", "0")])
    before = VmTemplateFacts(TEMPLATE_ID, LXC_IMAGE_NAME, 0, "oneadmin", app_template.replaced(
        "DISK", [Vector.of({"IMAGE_ID": str(ROOTFS_IMAGE_ID)})]))
    plan = plan_for(image, [before], world, PlannerSettings())
    return PlannedTemplate(plan, before, f.apply_edits(before, plan))


def oned_template_xml(facts: VmTemplateFacts) -> str:
    """The template as ``one.template.info`` returns it: <VMTEMPLATE> with <TEMPLATE>."""
    root = etree.Element("VMTEMPLATE")
    for tag, text in (("ID", str(facts.id)), ("UID", str(facts.uid)), ("GID", "0"),
                      ("UNAME", facts.uname), ("GNAME", "oneadmin"), ("NAME", facts.name)):
        etree.SubElement(root, tag).text = text
    root.append(etree.fromstring(to_xml((a.name, a.value) for a in facts.template)))
    return etree.tostring(root, encoding="unicode")


def expected_environment(doc: Mapping[str, object], hostname: str, home: str) -> dict[str, str]:
    """What `docker run` gives the process: the image Env, HOSTNAME, and HOME from the
    user's passwd entry when the image does not set it (PATH is in this image's Env)."""
    config = doc["config"]
    assert isinstance(config, dict)
    env: dict[str, str] = {}
    for entry in config["Env"]:
        name, _, value = entry.partition("=")
        env[name] = value
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    return env


def assert_app_ran_as_configured(result: BootResult, doc: Mapping[str, object],
                                 user: GuestUser = APP_USER) -> None:
    """The app runs with exactly the argv, environment, working directory and ids of the
    image config, once, and keeps running."""
    config = doc["config"]
    assert isinstance(config, dict)
    argv = tuple(config["Entrypoint"]) + tuple(config["Cmd"])
    report = result.report()
    assert result.app_cmdline is not None, report
    # The app is a #!/bin/sh script: the kernel puts the interpreter in front.
    assert result.app_cmdline[0] == "/bin/sh", report
    assert result.app_argv == argv, report
    environ = result.app_environ
    assert environ is not None, report
    names = [name for name, _ in environ]
    assert len(names) == len(set(names)), f"duplicate variables: {names}"
    hostname = result.guest_hostname
    assert hostname is not None, report
    assert dict(environ) == expected_environment(doc, hostname, user.home), report
    assert result.app_cwd == config["WorkingDir"], report
    group_name = str(config["User"]).split(":")[1]
    assert group_name == APP_GROUP.name
    assert result.app_uids == (user.uid,) * 4, report
    assert result.app_gids == (APP_GROUP.gid,) * 4, report
    # An explicit group replaces the supplementary groups (runc): only the gid.
    assert result.app_groups == (APP_GROUP.gid,), report
    assert len(result.values("app-pid")) == 1, "the app was started more than once"
    assert result.app_running, report


def injected_start_script(facts: VmTemplateFacts) -> str:
    """The START_SCRIPT in the template's CONTEXT (START_SCRIPT_BASE64, decoded)."""
    context = facts.template.vector("CONTEXT")
    assert context is not None, "the template has no CONTEXT"
    value = context.get("START_SCRIPT_BASE64")
    assert value is not None, "the template has no CONTEXT/START_SCRIPT_BASE64"
    return base64.b64decode(value, validate=True).decode()
