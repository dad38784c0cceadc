"""The boot proof: boot a VM template produced by hookd under QEMU, as OpenNebula would.

Every other test checks attributes; this module turns a VM template into what OpenNebula's
KVM driver hands QEMU, boots it for real under QEMU (TCG), and reports from the serial
console what happened inside::

    direct = domain_from_template(xml, files={100: vmlinux, 101: initrd},
                                  disks={10: rootfs}, dev_prefixes={10: "vd"})
    result = boot(direct)                       # -M pc, the KVM driver's view
    assert not result.problems(), result.report()
    result.root_device, result.start_script_exit, result.app_argv, result.app_environ

or, in one call, ``boot_template(xml, files, disks, dev_prefixes=...)``.

What is taken from the template (nothing is hard-coded):

* kernel and initrd: ``OS/KERNEL_DS`` / ``OS/INITRD_DS`` (``$FILE[IMAGE_ID=n]``) through
  ``files`` (image id → the file a KERNEL/RAMDISK image holds; oned copies it to the VM
  directory, src/tm/TransferManager.cc ``prolog_os_transfer_commands``), or ``OS/KERNEL`` /
  ``OS/INITRD`` as plain paths;
* the kernel command line exactly as src/vmm/LibVirtDriverKVM.cc (6.8.3, lines 851-893)
  writes ``<cmdline>``: ``"root=/dev/" + ROOT + " " + KERNEL_CMD`` when ROOT is set,
  KERNEL_CMD alone otherwise, nothing added (both used only when a kernel is set);
* the disks: each ``DISK`` by ``IMAGE_ID`` through ``disks`` (image id → raw image), its
  target from ``TARGET``, else ``DEV_PREFIX`` (the DISK's, else the image's as given in
  ``dev_prefixes``, else oned's DEFAULT_DEVICE_PREFIX) and the first free letter
  (src/vm/VirtualMachineDisk.cc ``assign_disk_targets``);
* the ``CONTEXT`` vector, plus the two attributes oned adds at instantiation: ``DISK_ID`` (the
  number of disks) and ``TARGET`` (DEFAULT_CDROM_DEVICE_PREFIX ``hd`` + the first free letter)
  (VirtualMachineDisk.cc, "Target for CDROMs and Context disk"). The guest does not need
  them; they are there so context.sh has oned's content. ``$NAME``-style references are
  left as written (there is no VM to resolve them against; hookd's START_SCRIPT_BASE64 has
  none);
* ``MEMORY`` and ``VCPU``.

QEMU runs like libvirt runs it for that domain, on ``-M pc``: ``-nodefaults``, the PVH
vmlinux with ``-kernel``, the initrd, ``-append`` with the command line above, each disk as a
virtio-blk-pci device (in target order: the guest names virtio disks by probe order, not by
libvirt's target, so vda is the first), the context ISO as an IDE CD-ROM at its target
(``hda`` = primary master; with ``-nodefaults`` there is no empty default CD drive, and the
guest tries every drive anyway). Non-persistent images are cloned by OpenNebula before boot; here
the disks are opened with ``snapshot=on`` instead, so the files are never written. Always
``-accel tcg`` by default: on our machines /dev/kvm is a nested variant whose guests die with
"KVM internal error" (shared/reference/qemu-boot-facts.md); ``accel="kvm"`` exists for hosts
where KVM works, and a QEMU that pauses on a KVM internal error is killed and reported.

``machine="microvm"`` is the Firecracker stand-in (OpenNebula 6.x's Firecracker driver,
src/vmm_mad/remotes/lib/firecracker/opennebula_vm.rb, and Firecracker v0.24.2, the version
OpenNebula installs): the command line is ``OS/KERNEL_CMD`` verbatim (``boot_args``) followed
by what Firecracker appends for the root drive, ``root=/dev/vda rw`` (src/vmm/src/builder.rs
``attach_block_devices``, v0.24.2 lines 772-790), plus ``tsc_early_khz=`` under TCG (without
it the kernel hangs calibrating the TSC); the root drive (``OS/BOOT``'s first disk, else the
first DISK) comes first, the context ISO last, all as virtio-mmio block devices (there is no
CD-ROM). OpenNebula ignores INITRD for Firecracker (OpenNebula/one#5382), so no initrd is
passed unless ``microvm_initrd`` is given. Where the stand-in is kinder than Firecracker
v0.24.2: that version announces its virtio-mmio devices only as ``virtio_mmio.device=`` on the
kernel command line (src/vmm/src/device_manager/mmio.rs ``add_virtio_device_to_cmdline``;
ACPI came in Firecracker 1.8.0, #4428), which needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES;
QEMU's microvm describes them in ACPI tables instead. Those arguments are therefore not
added: their addresses would be Firecracker's, not QEMU's.

The guest (:mod:`hookd.testing.boot_guest`): a busybox root filesystem whose ``/sbin/init``
mirrors one-context's handling of START_SCRIPT and reports each step, an app that reports
its argv/environment/cwd/ids, and an initrd for the Debian kernel. The guest prints
``HOOKD-BOOT key=value`` lines; :class:`BootResult` parses them, and
:meth:`BootResult.problems` turns them (and kernel panics, QEMU errors, timeouts) into clear
messages.

Measured (QEMU 7.2 under TCG, Debian's 6.1 cloud kernel; tests/boot): hookd's Docker Hub
template boots on pc in 4-5 s, START_SCRIPT returns in about 0.2 s. A bzImage behind
KERNEL_DS boots just as well: QEMU's x86 loader takes the Linux boot protocol for anything
with a "HdrS" header (hw/i386/x86-common.c), so hookd's kernel check is what keeps bzImages
out. An ELF without the PVH note makes QEMU exit at once ("Error loading uncompressed kernel
without PVH ELF Note"). On microvm without an initrd (what OpenNebula would do) the Debian
kernel panics with "VFS: Unable to mount root fs on unknown-block(0,0)": virtio_mmio and
virtio_blk are modules; with the initrd it boots like pc.

Host needs (Debian packages): ``qemu-system-x86``, ``busybox-static``, ``genisoimage``,
``e2fsprogs``; a missing one raises :class:`BootUnavailable` with the package name.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Literal

from handlers.template import Template, Vector
from hookd import documents
from hookd.testing.boot_guest import (
    INITRD_MODULES,
    MARKER,
    REPORT_APP,
    REPORT_DIR,
    BootUnavailable,
    GuestBuildError,
    GuestFile,
    GuestGroup,
    GuestUser,
    build_initrd,
    build_rootfs,
    find_busybox,
    report_app_script,
    resolve_modules,
)
from hookd.xmlsafe import UnsafeXml, parse

__all__ = [
    "INITRD_MODULES",
    "MARKER",
    "REPORT_APP",
    "REPORT_DIR",
    "BootDisk",
    "BootError",
    "BootEvent",
    "BootResult",
    "BootUnavailable",
    "DirectBoot",
    "GuestBuildError",
    "GuestFile",
    "GuestGroup",
    "GuestUser",
    "Machine",
    "boot",
    "boot_template",
    "build_initrd",
    "build_rootfs",
    "context_sh",
    "domain_from_template",
    "find_busybox",
    "firecracker_cmdline",
    "report_app_script",
    "require_boot_tools",
    "resolve_modules",
    "write_context_iso",
]

Machine = Literal["pc", "microvm"]

QEMU: Final = "qemu-system-x86_64"
#: oned.conf defaults (6.8.3): DEFAULT_DEVICE_PREFIX and DEFAULT_CDROM_DEVICE_PREFIX.
DEFAULT_DEVICE_PREFIX: Final = "sd"
DEFAULT_CDROM_PREFIX: Final = "hd"
#: What src/vm/VirtualMachineContext.cc writes first into context.sh.
CONTEXT_HEADER: Final = "# Context variables generated by OpenNebula\n"
#: Firecracker (v0.24.2 builder.rs) appends this for a writable root drive without PARTUUID.
FIRECRACKER_ROOT_ARGS: Final = ("root=/dev/vda", "rw")

_FILE_REF: Final = re.compile(r"^\s*\$FILE\[\s*IMAGE_ID\s*=\s*\"?\s*(\d+)\s*\"?\s*\]\s*$", re.I)
_BOOT_DISK: Final = re.compile(r"^\s*disk(\d+)\s*$", re.I)
_TARGET: Final = re.compile(r"^([a-z]+?)([a-z])$")
_PANIC: Final = re.compile(r"Kernel panic - not syncing: ?(.*)")
_KVM_ERROR: Final = "KVM internal error"
_PANIC_GRACE: Final = 5.0
_TOOL_TIMEOUT: Final = 120.0


class BootError(Exception):
    """The template cannot be booted (no kernel, a $FILE that does not resolve, ...)."""


# --------------------------------------------------------------------------------------
# Template → direct kernel boot
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootDisk:
    """A DISK of the template: its position (oned's DISK_ID), image, file and target."""

    disk_id: int
    image_id: int
    path: Path
    target: str


@dataclass(frozen=True)
class DirectBoot:
    """What the KVM driver hands libvirt/QEMU for a direct-kernel-boot template."""

    name: str
    kernel: Path
    initrd: Path | None
    #: OS/ROOT and OS/KERNEL_CMD as written in the template ("" when absent).
    root: str
    kernel_cmd: str
    #: LibVirtDriverKVM's ``<cmdline>``: "root=/dev/" + ROOT + " " + KERNEL_CMD, or
    #: KERNEL_CMD alone ("" = no ``<cmdline>``).
    cmdline: str
    disks: tuple[BootDisk, ...]
    #: Index into ``disks`` of the drive Firecracker marks as root (OS/BOOT, else DISK 0).
    root_disk: int
    #: The CONTEXT vector as oned writes it to context.sh (with DISK_ID and TARGET);
    #: empty when the template has no CONTEXT (then no context CD is attached).
    context: tuple[tuple[str, str], ...]
    context_target: str
    memory_mb: int
    vcpus: int

    @property
    def context_map(self) -> dict[str, str]:
        return dict(self.context)


def _template_element(template_xml: str) -> tuple[Template, str]:
    try:
        root = parse(template_xml)
    except UnsafeXml as error:
        raise BootError(f"the template is not XML oned would send: {error}") from None
    if root.tag == "TEMPLATE":
        element = root
    else:
        found = root.find("TEMPLATE")
        if found is None:
            raise BootError(
                f"<{root.tag}> has no <TEMPLATE>: expected oned's <VMTEMPLATE> (or <VM>) "
                "document or a bare <TEMPLATE>"
            )
        element = found
    template = documents.template(element)
    name = root.findtext("NAME") if root is not element else None
    return template, (name or template.get("NAME") or "").strip()


def _resolve_file(os_vec: Vector, attribute: str, files: Mapping[int, Path]) -> Path | None:
    """OS/<attribute>_DS through ``files``, else OS/<attribute> as a path, else None."""
    reference = (os_vec.get(f"{attribute}_DS") or "").strip()
    if reference:
        match = _FILE_REF.match(reference)
        if match is None:
            raise BootError(
                f"OS/{attribute}_DS={reference!r} is not of the form $FILE[IMAGE_ID=<id>] "
                "(the only form hookd writes and this harness resolves)"
            )
        image_id = int(match.group(1))
        if image_id not in files:
            raise BootError(
                f"OS/{attribute}_DS={reference} does not resolve: no file for image "
                f"{image_id} (known: {sorted(files) or 'none'})"
            )
        path = Path(files[image_id])
        if not path.is_file():
            raise BootError(f"OS/{attribute}_DS={reference} resolves to {path}, which is no file")
        return path
    plain = (os_vec.get(attribute) or "").strip()
    if plain:
        path = Path(plain)
        if not path.is_file():
            raise BootError(f"OS/{attribute}={plain} is no file on this host")
        return path
    return None


def _split_target(target: str) -> tuple[str, int]:
    match = _TARGET.match(target)
    if match is None:
        raise BootError(f"disk target {target!r} is not a prefix plus one letter (e.g. vda)")
    return match.group(1), ord(match.group(2)) - ord("a")


def _first_free(prefix: str, used: set[str]) -> str:
    for index in range(26):
        target = f"{prefix}{chr(ord('a') + index)}"
        if target not in used:
            return target
    raise BootError(f"no free {prefix}* target left")


def _int_attribute(template: Template, name: str, default: int) -> int:
    value = (template.get(name) or "").strip()
    if not value:
        return default
    try:
        number = int(float(value))
    except ValueError:
        raise BootError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise BootError(f"{name}={value!r} must be positive")
    return number


def domain_from_template(
    template_xml: str,
    files: Mapping[int, Path],
    disks: Mapping[int, Path],
    *,
    dev_prefixes: Mapping[int, str] | None = None,
    default_dev_prefix: str = DEFAULT_DEVICE_PREFIX,
    default_cdrom_prefix: str = DEFAULT_CDROM_PREFIX,
) -> DirectBoot:
    """Read a VM template as oned returns it and derive the direct kernel boot.

    ``files``: image id → the file of a KERNEL/RAMDISK image (for ``$FILE[IMAGE_ID=n]``).
    ``disks``: image id → the raw image of each DISK. ``dev_prefixes``: image id → the
    image template's DEV_PREFIX (oned copies it into the VM's DISK at instantiation;
    Docker Hub images carry ``vd``). Raises :class:`BootError` for a template without a
    kernel, a ``$FILE`` or a DISK that does not resolve, or a disk that is not virtio.
    """
    template, name = _template_element(template_xml)
    os_vec = template.vector("OS")
    if os_vec is None:
        raise BootError("the template has no OS vector, so no kernel: it would not be a "
                        "direct kernel boot")
    kernel = _resolve_file(os_vec, "KERNEL", files)
    if kernel is None:
        raise BootError(
            "the template sets no kernel (OS/KERNEL_DS or OS/KERNEL): LibVirtDriverKVM would "
            "not write <kernel>, ROOT or KERNEL_CMD, and the VM would boot from its disks"
        )
    initrd = _resolve_file(os_vec, "INITRD", files)
    root = os_vec.get("ROOT") or ""
    kernel_cmd = os_vec.get("KERNEL_CMD") or ""
    # LibVirtDriverKVM.cc: if ( !root.empty() ) kernel_cmd = "root=/dev/" + root + " " + ...
    cmdline = f"root=/dev/{root} {kernel_cmd}" if root else kernel_cmd

    prefixes = dict(dev_prefixes or {})
    vectors = template.vectors("DISK")
    if not vectors:
        raise BootError("the template has no DISK")
    used: set[str] = set()
    planned: list[tuple[int, int, Path, str | None, str]] = []
    for disk_id, vector in enumerate(vectors):
        raw_id = (vector.get("IMAGE_ID") or "").strip()
        if not raw_id.isdigit():
            what = "a volatile disk" if not vector.get("IMAGE") else "an image referenced by name"
            raise BootError(f"DISK {disk_id} is {what}: only DISK=[IMAGE_ID=<id>] is supported")
        image_id = int(raw_id)
        if image_id not in disks:
            raise BootError(
                f"DISK {disk_id} (IMAGE_ID {image_id}) does not resolve: no raw image for it "
                f"(known: {sorted(disks) or 'none'})"
            )
        path = Path(disks[image_id])
        if not path.is_file():
            raise BootError(f"DISK {disk_id} (IMAGE_ID {image_id}): {path} is no file")
        target = (vector.get("TARGET") or "").strip() or None
        prefix = (
            (vector.get("DEV_PREFIX") or "").strip()
            or prefixes.get(image_id, "").strip()
            or default_dev_prefix
        )
        if target is not None:
            if target in used:
                raise BootError(f"DISK {disk_id}: TARGET {target} is used twice")
            used.add(target)
            prefix = _split_target(target)[0]
        planned.append((disk_id, image_id, path, target, prefix))
    boot_disks: list[BootDisk] = []
    for disk_id, image_id, path, explicit, prefix in planned:
        target = explicit or _first_free(prefix, used)
        used.add(target)
        if not target.startswith("vd"):
            raise BootError(
                f"DISK {disk_id} (IMAGE_ID {image_id}) would be {target}: this harness "
                "attaches virtio-blk (vd*) disks only; give the image DEV_PREFIX=vd (pass "
                "dev_prefixes) or the DISK a vd TARGET"
            )
        boot_disks.append(BootDisk(disk_id, image_id, path, target))

    boot = (os_vec.get("BOOT") or "").strip()
    root_disk = 0
    if boot:
        match = _BOOT_DISK.match(boot.split(",")[0])
        if match and int(match.group(1)) < len(boot_disks):
            root_disk = int(match.group(1))

    context_vec = template.vector("CONTEXT")
    context: tuple[tuple[str, str], ...] = ()
    context_target = ""
    if context_vec is not None:
        context_target = (context_vec.get("TARGET") or "").strip()
        if not context_target:
            prefix = (context_vec.get("DEV_PREFIX") or "").strip() or default_cdrom_prefix
            context_target = _first_free(prefix, used)
        items = context_vec.set("DISK_ID", str(len(boot_disks))).set("TARGET", context_target)
        context = items.items
    return DirectBoot(
        name=name,
        kernel=kernel,
        initrd=initrd,
        root=root,
        kernel_cmd=kernel_cmd,
        cmdline=cmdline,
        disks=tuple(boot_disks),
        root_disk=root_disk,
        context=context,
        context_target=context_target,
        memory_mb=_int_attribute(template, "MEMORY", 512),
        vcpus=_int_attribute(template, "VCPU", 1),
    )


def firecracker_cmdline(direct: DirectBoot) -> str:
    """What Firecracker v0.24.2 boots the kernel with for this template: ``boot_args`` =
    OS/KERNEL_CMD verbatim (opennebula_vm.rb ``boot_source``), then Firecracker's own
    ``root=/dev/vda rw`` (builder.rs; ``Cmdline::insert_str`` separates with one space)."""
    words = [direct.kernel_cmd] if direct.kernel_cmd else []
    return " ".join([*words, *FIRECRACKER_ROOT_ARGS])


# --------------------------------------------------------------------------------------
# Context CD
# --------------------------------------------------------------------------------------


def context_sh(context: Mapping[str, str]) -> str:
    """context.sh as src/vm/VirtualMachineContext.cc (6.8.3, ``generate_context``) writes it:
    the header line, then ``KEY='value'`` per attribute in key order (a std::map), every
    ``'`` in a value replaced by ``'\\''``, each line ended by ``endl``."""
    lines = [CONTEXT_HEADER]
    for key in sorted(context):
        value = context[key]
        if "\0" in value or "\0" in key:
            raise BootError(f"context attribute {key!r} contains a NUL byte")
        escaped = value.replace("'", "'\\''")
        lines.append(f"{key}='{escaped}'\n")
    return "".join(lines)


def write_context_iso(context: Mapping[str, str], out: Path) -> Path:
    """The context CD: context.sh (:func:`context_sh`) on an ISO 9660 image labelled
    CONTEXT, made like src/tm_mad/common/context does (``genisoimage -V CONTEXT -J -R``)."""
    genisoimage = shutil.which("genisoimage")
    if genisoimage is None:
        raise BootUnavailable("genisoimage is not installed (Debian package genisoimage)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hookd-context-") as directory:
        (Path(directory) / "context.sh").write_text(context_sh(context), encoding="utf-8")
        try:
            done = subprocess.run(
                [genisoimage, "-quiet", "-o", str(out), "-V", "CONTEXT", "-J", "-R", directory],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_TOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BootError(f"genisoimage could not run: {error}") from None
    if done.returncode != 0:
        raise BootError(f"genisoimage failed: {done.stderr.strip() or done.returncode}")
    return out


# --------------------------------------------------------------------------------------
# Running QEMU
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootEvent:
    """One ``key=value`` the guest printed, and when the line arrived (seconds since QEMU
    was started)."""

    key: str
    value: str
    at: float


def _decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


@dataclass(frozen=True)
class BootResult:
    """What one boot did: console, guest markers, QEMU's end."""

    machine: Machine
    command: tuple[str, ...]
    #: The kernel command line QEMU got (``-append``).
    cmdline: str
    console: str
    events: tuple[BootEvent, ...]
    qemu_stderr: str
    #: QEMU's exit status, None when it was killed.
    exit_code: int | None
    duration: float
    timeout: float
    timed_out: bool
    #: Why the harness killed QEMU before its timeout (kernel panic without reboot, KVM
    #: internal error), or None.
    kill_reason: str | None = None
    _markers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_markers", {event.key: event.value for event in self.events})

    # -- raw access --------------------------------------------------------------------
    @property
    def markers(self) -> Mapping[str, str]:
        """Each key's last value."""
        return dict(self._markers)

    def values(self, key: str) -> tuple[str, ...]:
        """Every value ``key`` had, in order (an app started twice reports twice)."""
        return tuple(event.value for event in self.events if event.key == key)

    def marker(self, key: str) -> str | None:
        return self._markers.get(key)

    def at(self, key: str) -> float | None:
        """When ``key`` was first printed (seconds since QEMU started), or None."""
        return next((event.at for event in self.events if event.key == key), None)

    def decoded(self, key: str) -> bytes | None:
        value = self._markers.get(key)
        return None if value is None else _decode(value)

    # -- what happened ------------------------------------------------------------------
    @property
    def booted(self) -> bool:
        """The root filesystem's /sbin/init ran."""
        return "init" in self._markers

    @property
    def root_device(self) -> str | None:
        return self._markers.get("root-device")

    @property
    def root_mode(self) -> str | None:
        """``rw`` or ``ro``: how ``/`` is mounted."""
        return self._markers.get("root-mode")

    @property
    def root_writable(self) -> bool:
        return self._markers.get("root-writable") == "yes"

    @property
    def context_device(self) -> str | None:
        return self._markers.get("context-device")

    @property
    def start_script_exit(self) -> int | None:
        value = self._markers.get("start-script-exit")
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    @property
    def start_script_seconds(self) -> float | None:
        value = self._markers.get("start-script-ms")
        return int(value) / 1000 if value is not None and value.isdigit() else None

    @property
    def start_script_output(self) -> str:
        raw = self.decoded("start-script-output-b64")
        return "" if raw is None else raw.decode(errors="replace")

    @property
    def context_continued(self) -> bool:
        return self._markers.get("context") == "continued"

    @property
    def guest_hostname(self) -> str | None:
        raw = self.decoded("hostname-b64")
        return None if raw is None else raw.decode(errors="replace")

    @property
    def app_cmdline(self) -> tuple[str, ...] | None:
        """The app's /proc/PID/cmdline: for a ``#!/bin/sh`` script the kernel passes
        ``("/bin/sh", <script path as exec'ed>, argv[1], ...)``."""
        raw = self.decoded("app-cmdline-b64")
        if raw is None:
            return None
        return tuple(part.decode(errors="surrogateescape") for part in raw.split(b"\0")[:-1])

    @property
    def app_argv(self) -> tuple[str, ...] | None:
        """The argv the app was exec'ed with (the interpreter the kernel added dropped; the
        kernel also replaces argv[0] by the path it exec'ed, which is the same for an
        absolute Entrypoint)."""
        cmdline = self.app_cmdline
        return None if cmdline is None else cmdline[1:]

    @property
    def app_environ(self) -> tuple[tuple[str, str], ...] | None:
        """The app's environment at exec, in order, as (name, value)."""
        raw = self.decoded("app-environ-b64")
        if raw is None:
            return None
        pairs: list[tuple[str, str]] = []
        for entry in raw.split(b"\0")[:-1]:
            name, _, value = entry.decode(errors="surrogateescape").partition("=")
            pairs.append((name, value))
        return tuple(pairs)

    @property
    def app_cwd(self) -> str | None:
        raw = self.decoded("app-cwd-b64")
        return None if raw is None else raw.decode(errors="surrogateescape")

    def _ids(self, key: str) -> tuple[int, ...] | None:
        value = self._markers.get(key)
        if value is None:
            return None
        return tuple(int(part) for part in value.split(",") if part.isdigit())

    @property
    def app_uids(self) -> tuple[int, ...] | None:
        """Real, effective, saved and filesystem uid of the app."""
        return self._ids("app-uid")

    @property
    def app_gids(self) -> tuple[int, ...] | None:
        return self._ids("app-gid")

    @property
    def app_groups(self) -> tuple[int, ...] | None:
        """Supplementary groups."""
        return self._ids("app-groups")

    @property
    def app_running(self) -> bool:
        return self._markers.get("app") == "running" and self._markers.get("app-alive") == "yes"

    # -- a systemd root filesystem (hookd.testing.rootfs's proof unit) -----------------
    @property
    def init_name(self) -> str | None:
        """``systemd`` when the Debian root filesystem's proof unit reported (PID 1's name);
        ``start`` from the busybox guest's init."""
        return self._markers.get("init")

    @property
    def proof_done(self) -> bool:
        """The proof unit saw the end of systemd's boot and reported everything."""
        return self._markers.get("proof") == "done"

    @property
    def systemd_state(self) -> str | None:
        """``systemctl is-system-running`` once the boot job queue was empty: ``running``
        (nothing failed), ``degraded`` (a unit failed), ..."""
        return self._markers.get("systemd-state")

    @property
    def systemd_default_target(self) -> str | None:
        return self._markers.get("systemd-default")

    @property
    def systemd_failed_units(self) -> tuple[str, ...]:
        value = self._markers.get("systemd-failed", "none")
        return () if value in ("", "none") else tuple(value.split(","))

    @property
    def systemd_reached_target(self) -> bool:
        """systemd finished booting and its default target (and multi-user.target) is
        active."""
        return (
            self.init_name == "systemd"
            and self.systemd_state in ("running", "degraded")
            and self._markers.get("systemd-default-state") == "active"
            and self._markers.get("multi-user-target") == "active"
        )

    @property
    def systemd_finish_seconds(self) -> float | None:
        """When systemd finished booting, in seconds since the kernel started (systemd's
        FinishTimestampMonotonic)."""
        value = self._markers.get("systemd-finish-ms")
        return int(value) / 1000 if value is not None and value.isdigit() else None

    @property
    def guest_kernel_cmdline(self) -> str | None:
        """/proc/cmdline as the root filesystem's proof unit read it."""
        raw = self.decoded("cmdline-b64")
        return None if raw is None else raw.decode(errors="replace")

    # -- diagnosis ----------------------------------------------------------------------
    def panics(self) -> list[str]:
        return [m.group(1).strip() for m in _PANIC.finditer(self.console)]

    def problems(self) -> list[str]:
        """Clear sentences for everything that went wrong; empty for a clean boot."""
        found: list[str] = []
        m = self._markers
        stderr_lines = [line for line in self.qemu_stderr.splitlines() if line.strip()]
        if self.exit_code not in (0, None) and not self.console.strip():
            detail = stderr_lines[-1] if stderr_lines else f"exit status {self.exit_code}"
            found.append(f"QEMU failed before the guest printed anything: {detail}")
        elif self.exit_code not in (0, None):
            detail = stderr_lines[-1] if stderr_lines else "no message"
            found.append(f"QEMU exited with status {self.exit_code}: {detail}")
        for message in self.panics():
            found.append(f"kernel panic: {message}")
        for name in self.values("initrd-insmod-failed"):
            found.append(f"initrd: insmod {name} failed")
        if "initrd-no-root-arg" in m:
            found.append("no root= on the kernel command line (the initrd cannot find the root)")
        if "initrd-root-unsupported" in m:
            found.append(f"root={m['initrd-root-unsupported']} is not a /dev path the initrd "
                         "understands")
        if "initrd-root-missing" in m:
            found.append(
                f"root device {m['initrd-root-missing']} never appeared (waited "
                f"{m.get('initrd-root-wait-s', '?')} s; block devices: "
                f"{m.get('initrd-block-devices', '?')})"
            )
        if "initrd-mount-failed" in m:
            found.append(f"cannot mount root device {m['initrd-mount-failed']} "
                         f"({m.get('initrd-root-mode', '?')})")
        if "initrd-no-init" in m:
            found.append(f"the root filesystem has no executable {m['initrd-no-init']}")
        if not self.booted and not found:
            found.append("the root filesystem's /sbin/init never started")
        if self.booted:
            if m.get("root-mode") == "ro":
                found.append(
                    f"the root filesystem ({m.get('root-device')}) is mounted read-only: no "
                    "`rw` on the kernel command line, and Linux mounts the root read-only by "
                    "default (init/do_mounts.c)"
                )
            if "context-missing" in m:
                found.append(f"no context CD labelled CONTEXT was found (tried: "
                             f"{m.get('context-tried', '?')})")
            if "context-mount-failed" in m:
                found.append(f"the context CD {m['context-mount-failed']} could not be mounted")
            if "context-sh-missing" in m:
                found.append("the context CD has no context.sh")
        if "start-script-decode-failed" in m:
            found.append(
                "START_SCRIPT_BASE64 is not valid base64: net-97-start-script stops before "
                f"running anything (base64 -d exited with {m['start-script-decode-failed']})"
            )
        elif "start-script-hung" in m:
            found.append(
                f"START_SCRIPT did not return within {m['start-script-hung']} s (one-context "
                "would wait for ever: no READY report, no later context scripts, lock held)"
            )
        elif m.get("start-script") in ("base64", "plain") and "start-script-exit" not in m:
            found.append("START_SCRIPT did not return")
        code = self.start_script_exit
        if code is not None and code != 0 and "start-script-decode-failed" not in m:
            output = self.start_script_output.strip().splitlines()
            found.append(f"START_SCRIPT exited with status {code}"
                         + (f": {output[-1]}" if output else ""))
        if "start-script-exit" in m and not self.context_continued:
            found.append("contextualization did not continue after START_SCRIPT")
        if m.get("app-wait") == "timeout":
            output = self.start_script_output.strip().splitlines()
            found.append(
                f"the app never reported (waited {m.get('app-wait-s', '?')} s)"
                + (f"; START_SCRIPT said: {output[-1]}" if output else "")
            )
        elif m.get("app-wait") == "reported" and "app-pid" not in m:
            found.append("the app said it reported, but its report never reached the console")
        if m.get("app-alive") == "no":
            found.append("the app exited right after its report")
        if self.init_name == "systemd":
            found += self._systemd_problems()
        if self.timed_out:
            last = [line for line in self.console.splitlines() if line.strip()]
            found.append(f"timed out after {self.timeout:g} s"
                         + (f" (last console line: {last[-1].strip()[:160]})" if last else ""))
            if not self.events and "console=ttyS0" not in self.cmdline.split():
                found.append(
                    "nothing was reported, and the kernel command line has no console=ttyS0: "
                    "the kernel, the initrd and systemd print on tty0, which the harness "
                    "cannot read (only a root filesystem that writes to /dev/ttyS0 itself is "
                    "heard)"
                )
        if self.kill_reason:
            found.append(self.kill_reason)
        return found

    def _systemd_problems(self) -> list[str]:
        m = self._markers
        found: list[str] = []
        state = m.get("systemd-state")
        if state is None:
            jobs = (self.decoded("systemd-jobs-b64") or b"").decode(errors="replace")
            waiting = [line.split()[1] for line in jobs.splitlines() if len(line.split()) > 1]
            found.append(
                "systemd reached basic.target (the proof unit started) but its boot never "
                "finished" + (f"; still waiting for: {', '.join(waiting[:6])}" if waiting else "")
            )
            return found
        if state != "running":
            failed = ", ".join(self.systemd_failed_units) or "none listed"
            found.append(f"systemd finished booting in state {state} (failed units: {failed})")
        default = m.get("systemd-default", "?")
        if m.get("systemd-default-state") != "active":
            found.append(f"systemd's default target {default} is "
                         f"{m.get('systemd-default-state', 'unknown')}, not active")
        if m.get("multi-user-target") != "active":
            found.append(f"multi-user.target is {m.get('multi-user-target', 'unknown')}, "
                         "not active")
        if not self.proof_done:
            found.append("the proof unit stopped before it reported everything")
        return found

    def report(self, lines: int = 60) -> str:
        """Problems, the command line and the end of the console: for assertion messages."""
        tail = "\n".join(self.console.splitlines()[-lines:])
        problems = "\n".join(f"  - {p}" for p in self.problems()) or "  (none)"
        return (
            f"boot on {self.machine} in {self.duration:.1f} s, exit {self.exit_code}\n"
            f"cmdline: {self.cmdline}\nproblems:\n{problems}\n"
            f"--- console (last {lines} lines) ---\n{tail}\n"
            f"--- qemu stderr ---\n{self.qemu_stderr.strip()}"
        )


def require_boot_tools() -> None:
    """Raise :class:`BootUnavailable` naming the first missing host tool (and its package)."""
    for program, package in (
        (QEMU, "qemu-system-x86"), ("genisoimage", "genisoimage"),
    ):  # fmt: skip
        if shutil.which(program) is None:
            raise BootUnavailable(f"{program} is not installed (Debian package {package})")
    for program in ("mkfs.ext4", "debugfs"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            raise BootUnavailable(f"{program} is not installed (Debian package e2fsprogs)")
    find_busybox()


def _drive(value: Path) -> str:
    """A path as a QEMU option value (commas are doubled)."""
    return str(value).replace(",", ",,")


def _host_tsc_khz() -> int:
    """Under TCG the guest's TSC runs at the host's: take the host's from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError as error:
        raise BootUnavailable(f"cannot read /proc/cpuinfo for tsc_early_khz: {error}") from None
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.M)
    if match is None:
        raise BootUnavailable("/proc/cpuinfo has no 'cpu MHz' for tsc_early_khz")
    return round(float(match.group(1)) * 1000)


def _ide_address(target: str) -> tuple[int, int]:
    """hda..hdd → (IDE bus, unit) as libvirt places them."""
    prefix, index = _split_target(target)
    if prefix != "hd" or index > 3:
        raise BootError(f"the context CD target {target} is not an IDE target hda..hdd")
    return index // 2, index % 2


def _command(
    direct: DirectBoot,
    machine: Machine,
    accel: str,
    iso: Path | None,
    extra_append: str,
    microvm_initrd: Path | None,
) -> tuple[list[str], str]:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise BootUnavailable(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    command = [
        qemu, "-accel", accel, "-M", machine, "-m", str(direct.memory_mb),
        "-smp", str(direct.vcpus), "-nodefaults", "-no-user-config", "-nographic",
        "-serial", "stdio", "-monitor", "none", "-no-reboot", "-kernel", str(direct.kernel),
    ]  # fmt: skip
    if machine == "pc":
        cmdline = direct.cmdline
        initrd = direct.initrd
        ordered = sorted(direct.disks, key=lambda disk: _split_target(disk.target))
        bus = "virtio-blk-pci"
    else:
        cmdline = firecracker_cmdline(direct)
        if accel == "tcg":
            cmdline += f" tsc_early_khz={_host_tsc_khz()}"
        initrd = microvm_initrd
        root = direct.disks[direct.root_disk]
        ordered = [root, *(disk for disk in direct.disks if disk is not root)]
        bus = "virtio-blk-device"
    if extra_append:
        cmdline = f"{cmdline} {extra_append}" if cmdline else extra_append
    if initrd is not None:
        command += ["-initrd", str(initrd)]
    if cmdline:
        command += ["-append", cmdline]
    for disk in ordered:
        drive = f"disk{disk.disk_id}"
        command += [
            "-drive", f"file={_drive(disk.path)},if=none,id={drive},format=raw,snapshot=on",
            "-device", f"{bus},drive={drive}",
        ]  # fmt: skip
    if iso is not None:
        command += ["-drive", f"file={_drive(iso)},if=none,id=context,format=raw,readonly=on"
                    + (",media=cdrom" if machine == "pc" else "")]
        if machine == "pc":
            ide_bus, unit = _ide_address(direct.context_target)
            command += ["-device", f"ide-cd,drive=context,bus=ide.{ide_bus},unit={unit}"]
        else:
            command += ["-device", f"{bus},drive=context"]
    return command, cmdline


@dataclass
class _Console:
    """Collects the serial console (QEMU's stdout) line by line, with arrival times."""

    started: float
    lines: list[str] = field(default_factory=list)
    events: list[BootEvent] = field(default_factory=list)
    panic_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").replace("\r", "").rstrip("\n")
        now = time.monotonic() - self.started
        with self.lock:
            self.lines.append(line)
            start = line.find(MARKER + " ")
            if start >= 0:
                for token in line[start + len(MARKER) + 1 :].split():
                    key, sep, value = token.partition("=")
                    if sep and key:
                        self.events.append(BootEvent(key, value, round(now, 3)))
            if self.panic_at is None and "Kernel panic - not syncing" in line:
                self.panic_at = now


def _pump(stream: IO[bytes] | None, sink: _Console | list[bytes]) -> None:
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        if isinstance(sink, _Console):
            sink.feed(raw)
        else:
            sink.append(raw)


def boot(
    direct: DirectBoot,
    *,
    machine: Machine = "pc",
    timeout: float = 180,
    extra_append: str = "",
    accel: Literal["tcg", "kvm"] = "tcg",
    microvm_initrd: Path | None = None,
    start_script_limit: int | None = None,
    workdir: Path | None = None,
) -> BootResult:
    """Boot ``direct`` under QEMU and collect what happened (see the module docstring).

    ``extra_append`` is added to the command line (nothing is added otherwise, except
    ``tsc_early_khz=`` on microvm under TCG). ``microvm_initrd``: boot the microvm stand-in
    with this initrd although OpenNebula would pass none to Firecracker.
    ``start_script_limit``: seconds the guest init lets the START_SCRIPT run before it reports
    it hung (default: the value the root filesystem was built with); passed as
    ``hookd.start_script_limit=`` on the command line, which the kernel ignores. ``workdir`` keeps
    the context ISO (a temporary directory otherwise). QEMU is killed after ``timeout``
    seconds, a few seconds after a kernel panic that does not reboot, and when it pauses on
    a KVM internal error.
    """
    if machine not in ("pc", "microvm"):
        raise BootError(f"unknown machine {machine!r}: expected 'pc' or 'microvm'")
    if start_script_limit is not None:
        if start_script_limit <= 0:
            raise BootError("start_script_limit must be a positive number of seconds")
        knob = f"hookd.start_script_limit={start_script_limit}"
        extra_append = f"{extra_append} {knob}" if extra_append else knob
    with tempfile.TemporaryDirectory(prefix="hookd-boot-") as scratch:
        directory = workdir if workdir is not None else Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        iso = write_context_iso(direct.context_map, directory / "context.iso") \
            if direct.context else None
        command, cmdline = _command(direct, machine, accel, iso, extra_append, microvm_initrd)
        return _run_qemu(command, cmdline, machine, timeout)


def _run_qemu(command: list[str], cmdline: str, machine: Machine, timeout: float) -> BootResult:
    started = time.monotonic()
    console = _Console(started)
    stderr_chunks: list[bytes] = []
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, console), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stderr_chunks), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    kill_reason: str | None = None
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                timed_out = True
            elif console.panic_at is not None and elapsed - console.panic_at > _PANIC_GRACE:
                kill_reason = (f"QEMU was killed {_PANIC_GRACE:g} s after the kernel panic "
                               "(no panic= reboot)")
            elif _KVM_ERROR in b"".join(stderr_chunks).decode(errors="replace"):
                kill_reason = "QEMU stopped on a KVM internal error (use accel='tcg')"
            if timed_out or kill_reason:
                process.kill()
                break
            time.sleep(0.05)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=5)
    duration = time.monotonic() - started
    killed = timed_out or kill_reason is not None
    with console.lock:
        text = "\n".join(console.lines)
        events = tuple(console.events)
    return BootResult(
        machine=machine,
        command=tuple(command),
        cmdline=cmdline,
        console=text,
        events=events,
        qemu_stderr=b"".join(stderr_chunks).decode(errors="replace"),
        exit_code=None if killed else process.returncode,
        duration=round(duration, 3),
        timeout=timeout,
        timed_out=timed_out,
        kill_reason=kill_reason,
    )


def boot_template(
    template_xml: str,
    files: Mapping[int, Path],
    disks: Mapping[int, Path],
    *,
    dev_prefixes: Mapping[int, str] | None = None,
    machine: Machine = "pc",
    timeout: float = 180,
    extra_append: str = "",
    microvm_initrd: Path | None = None,
    start_script_limit: int | None = None,
) -> BootResult:
    """:func:`domain_from_template` + :func:`boot`: boot the VM template XML oned returns."""
    direct = domain_from_template(template_xml, files, disks, dev_prefixes=dev_prefixes)
    return boot(direct, machine=machine, timeout=timeout, extra_append=extra_append,
                microvm_initrd=microvm_initrd, start_script_limit=start_script_limit)
