"""A real Debian root filesystem for the boot proof, shaped like a Linux Containers image.

The busybox guest of :mod:`hookd.testing.boot_guest` proves the template; this module proves
that what OpenNebula imports from images.linuxcontainers.org (a distribution's root
filesystem, no kernel, systemd as its init) boots to that init with the kernel and initrd
hookd attaches, from the VM template hookd fixed for KVM::

    from hookd.testing.rootfs import prepare_debian_guest

    guest = prepare_debian_guest(workdir)      # kernel, initrd, rootfs: cached after the 1st
    result = guest.boot(template_xml,          # <VMTEMPLATE> as one.template.info returns it
                        kernel_id=100,         # KERNEL_DS=$FILE[IMAGE_ID=100] -> the vmlinux
                        initrd_id=101,         # INITRD_DS=$FILE[IMAGE_ID=101] -> the initrd
                        rootfs_id=10)          # DISK=[IMAGE_ID=10] -> the Debian image
    assert result.systemd_reached_target and not result.problems(), result.report()

or the image alone: ``build_debian_rootfs().image`` (an ext4 image, the whole disk, no
partition table). Both raise :class:`RootfsUnavailable` (no mmdebstrap, no mirror, ...).

What is built (Debian packages ``mmdebstrap``, ``debian-archive-keyring``, ``e2fsprogs``):

* ``mmdebstrap --variant=minbase`` of ``bookworm`` for amd64 from the Debian mirror
  (``$HOOKD_TEST_DEBIAN_MIRROR``, else http://deb.debian.org/debian), plus the packages the
  Linux Containers recipe adds that matter to booting (lxc-ci ``images/debian.yaml``, the
  recipe of images.linuxcontainers.org, for bookworm: ``init`` (systemd-sysv), ``udev``,
  ``dbus``, ``systemd-resolved``, ``iproute2``, ``netbase``, ``procps``; left out as
  irrelevant to booting: ``dialog``, ``locales``, ``vim``, ``sudo``, ``openssh-client``,
  ``iputils-ping``, ``isc-dhcp-client``, ``net-tools``), and like that recipe
  systemd-networkd and systemd-resolved enabled with a DHCP network for ``eth0``. No kernel,
  no boot loader, no one-context: like the image. ``/etc/fstab`` is debootstrap's
  ``# UNCONFIGURED FSTAB FOR BASE SYSTEM`` (the container image's: nothing to mount, so
  nothing can break on a single root disk), ``/etc/machine-id`` is empty (the image's: systemd
  generates one at boot), ``/sbin/init`` is systemd.
* The proof: ``hookd-boot-proof.service`` (:data:`PROOF_UNIT`), enabled for
  ``multi-user.target``, runs :data:`PROOF_SCRIPT`, which writes ``HOOKD-BOOT key=value``
  lines (the boot harness's format, :class:`hookd.testing.boot.BootResult`) **straight to
  /dev/ttyS0** (OpenNebula's KVM driver defines no serial console and the kernel command line
  need not say ``console=ttyS0``; the harness's QEMU has the port): ``init=systemd``, the
  kernel, the root device and mode, then, once systemd's boot job queue is empty
  (``systemctl is-system-running --wait``), the state systemd reached, the default target
  and whether it is active, failed units, systemd's own timestamps, whether a CONTEXT CD is
  there and whether one-context is installed (it is not); then it powers the VM off.
  ``hookd.proof_poweroff=no`` on the kernel command line keeps it running.
* The tarball mmdebstrap writes becomes an ext4 image without mounting anything and without
  root: the members are unpacked as files (device nodes skipped), ``mkfs.ext4 -d`` copies
  them, and ``debugfs -w`` then sets every inode's owner and mode as the tarball says, makes
  the device nodes and sets extended attributes (POSIX ACLs), so the image is the same
  whoever builds it. mmdebstrap itself runs in its ``root`` mode as root and in ``unshare``
  mode otherwise (``--mode=auto``).

Cache: ``<cache>/debian-rootfs/<suite>-<key>/`` (cache = ``cache_dir``, else
``$HOOKD_TEST_CACHE``, else ``~/.cache/hookd-test``; the Debian kernel's cache), keyed by
everything that goes into the image except the mirror it was downloaded from (suite,
variant, architecture, packages, size, the files this module adds, the recipe version).
Built in a temporary directory and renamed into place under a lock; the two most recently
used entries are kept. A cached image is used without touching the network, so package
versions are those of the day it was built (``rootfs.json`` lists them); delete the
directory to refresh it.

Measured (QEMU 7.2 TCG, 2 cores shared with other work, Debian 12 host, deb.debian.org):
mmdebstrap takes 15 s on an idle machine (87 s with a load average of 11), the ext4 image
6-11 s; 137 packages, 230 MB in a 1 GiB sparse image. A boot of the template takes 20-24 s
until QEMU exits: systemd starts about 3 s after the kernel, reaches its target about 17 s
after it, then powers off.

Errors: a missing tool, an unreachable mirror or an mmdebstrap that cannot pick a mode raise
:class:`RootfsUnavailable` (a :class:`~hookd.testing.boot_guest.BootUnavailable`) with a
one-sentence ``reason``; anything else that fails raises :class:`RootfsBuildError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hookd.testing.boot import BootResult, boot_template, require_boot_tools
from hookd.testing.boot_guest import (
    MARKER,
    ROOT_MOUNT_PROBE,
    BootUnavailable,
    GuestBuildError,
    GuestFile,
    build_initrd,
)
from hookd.testing.debian_kernel import DEFAULT_PACKAGE as DEFAULT_KERNEL_PACKAGE
from hookd.testing.debian_kernel import (
    DebianKernel,
    cache_lock,
    default_cache_dir,
    fetch_debian_kernel,
)

__all__ = [
    "DEBIAN_BOOT_TIMEOUT",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "LXC_PACKAGES",
    "MIRROR_ENV",
    "PROOF_SCRIPT",
    "PROOF_TTY",
    "PROOF_UNIT",
    "DebianGuest",
    "DebianRootfs",
    "RootfsBuildError",
    "RootfsUnavailable",
    "build_debian_rootfs",
    "dpkg_packages",
    "ext4_from_tar",
    "prepare_debian_guest",
    "proof_files",
]

DEFAULT_SUITE: Final = "bookworm"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
MIRROR_ENV: Final = "HOOKD_TEST_DEBIAN_MIRROR"
ARCHITECTURE: Final = "amd64"
VARIANT: Final = "minbase"
#: What the Linux Containers recipe installs on top of minbase that matters to booting
#: (see the module docstring for what is left out).
LXC_PACKAGES: Final = (
    "init", "udev", "dbus", "systemd-resolved", "iproute2", "netbase", "procps",
)  # fmt: skip
#: Units the Linux Containers recipe enables after installing the packages.
LXC_ENABLE: Final = ("systemd-networkd.service", "systemd-resolved.service")
PROOF_UNIT: Final = "hookd-boot-proof.service"
PROOF_SCRIPT: Final = "/usr/local/sbin/hookd-boot-proof"
#: Where the proof writes: the harness's QEMU serial port (``-serial stdio``).
PROOF_TTY: Final = "/dev/ttyS0"
HOSTNAME: Final = "debian"
#: The Debian archive keys mmdebstrap verifies the mirror with.
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_SIZE_MB: Final = 1024

_CACHE_SUBDIR: Final = "debian-rootfs"
_MANIFEST: Final = "rootfs.json"
_IMAGE: Final = "rootfs.ext4"
_KEEP: Final = 2
# Bumped whenever the way the image is built changes, so cached images are rebuilt.
_RECIPE_VERSION: Final = "1"
_BUILD_TIMEOUT: Final = 1800.0
_TOOL_TIMEOUT: Final = 600.0
_MIRROR_TIMEOUT: Final = 15.0
_SUITE: Final = re.compile(r"^[a-z][a-z0-9-]*$")
_PACKAGE: Final = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_NETWORK_TROUBLE: Final = re.compile(
    r"Could not resolve|Temporary failure resolving|Failed to fetch|Unable to connect|"
    r"Connection timed out|Network is unreachable|Connection refused|Could not connect"
)
_NO_MODE: Final = re.compile(r"unable to pick chroot mode|cannot unshare|unshare.*(failed|not)")


class RootfsUnavailable(BootUnavailable):
    """The Debian root filesystem cannot be built here (tool, mirror or privileges missing)."""

    def __str__(self) -> str:
        return self.reason


class RootfsBuildError(GuestBuildError):
    """Building the Debian root filesystem failed for another reason than a missing part."""


@dataclass(frozen=True)
class DebianRootfs:
    """A built (or cached) Debian root filesystem image."""

    #: The ext4 image: a whole disk, no partition table (what OpenNebula's Linux Containers
    #: import makes from rootfs.tar.xz). Never written by the boot harness (snapshot=on).
    image: Path
    suite: str
    architecture: str
    size_mb: int
    #: (package, version) of every installed package, from the image's dpkg status.
    packages: tuple[tuple[str, str], ...]
    #: The mirror it was downloaded from.
    mirror: str
    #: Seconds the build took when it was built: mmdebstrap, then the ext4 image.
    mmdebstrap_seconds: float
    image_seconds: float
    #: True when this call found it in the cache (no build, no network).
    from_cache: bool
    #: The cache key (hex).
    key: str

    @property
    def build_seconds(self) -> float:
        return round(self.mmdebstrap_seconds + self.image_seconds, 1)

    def has_package(self, name: str) -> bool:
        return any(package == name for package, _ in self.packages)


# --------------------------------------------------------------------------------------
# What hookd adds to the image: the proof unit (and the Linux Containers touches)
# --------------------------------------------------------------------------------------

_PROOF_UNIT_TEXT = """\
# Written by hookd's boot proof (hookd/testing/rootfs.py): reports on the serial port
# that systemd booted this root filesystem to its target, then powers the machine off.
[Unit]
Description=hookd boot proof: report the boot on @TTY@ and power off
# Default dependencies: ordered after sysinit.target and basic.target, so this runs at all
# only once systemd has reached basic.target.

[Service]
# exec: the start job is done once the script runs, so it does not hold up the boot it
# waits for.
Type=exec
ExecStart=@SCRIPT@
StandardInput=null
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
"""

_PROOF_SCRIPT_TEXT = r"""#!/bin/sh
# hookd boot proof (written by hookd/testing/rootfs.py), run by @UNIT@. Writes
# "@MARKER@ key=value" lines to @TTY@ directly, whatever the kernel's console is, then
# powers off (unless hookd.proof_poweroff=no is on the kernel command line).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
export PATH LC_ALL
tty=@TTY@
# No modem lines to wait for, no hang-up on close.
stty -F "$tty" clocal -hupcl 2>/dev/null || :
# The port is opened for each line: a getty starting on it (console=ttyS0 makes systemd
# start serial-getty@ttyS0) hangs up every descriptor already open, and a write on one
# fails; a line that hits that moment is written once more. Also in the journal.
say() {
	line="@MARKER@ $*"
	echo "$line"
	printf '%s\n' "$line" 2>/dev/null >"$tty" || printf '%s\n' "$line" 2>/dev/null >"$tty"
}
b64() { base64 -w 0; }
# Milliseconds since boot (/proc/uptime has two decimals; "1xx0 - 1000" avoids octal).
uptime_ms() { read -r up _ </proc/uptime && echo $((${up%.*} * 1000 + 1${up#*.}0 - 1000)); }

say init=$(cat /proc/1/comm) init-exe=$(readlink /proc/1/exe) unit=@UNIT@ \
	uptime-ms=$(uptime_ms) basic-target=$(systemctl is-active basic.target)
. /etc/os-release
say kernel-release=$(uname -r) os-id=$ID os-version-id=$VERSION_ID \
	os-codename=$VERSION_CODENAME
cmdline=$(cat /proc/cmdline)
say cmdline-b64=$(printf '%s' "$cmdline" | b64)

# The root file system: which device, mounted how.
""" + ROOT_MOUNT_PROBE + r"""
# Wait until systemd's boot job queue is empty; every @STEP@ s say what it still waits for.
waited=0
while :; do
	state=$(timeout @STEP@ systemctl is-system-running --wait 2>/dev/null)
	[ $? -eq 124 ] || break
	waited=$((waited + @STEP@))
	say systemd-waiting-s=$waited \
		systemd-jobs-b64=$(systemctl list-jobs --no-legend --no-pager 2>&1 | b64)
done
default=$(systemctl get-default)
failed=$(systemctl list-units --state=failed --no-legend --plain --no-pager |
	while read -r unit _; do printf '%s,' "$unit"; done)
failed=${failed%,}
say systemd-state=${state:-unknown} systemd-default=$default \
	systemd-default-state=$(systemctl is-active "$default") \
	multi-user-target=$(systemctl is-active multi-user.target) systemd-failed=${failed:-none}
if [ -n "$failed" ]; then
	say systemd-failed-status-b64=$(systemctl status --no-pager --lines=8 \
		$(echo "$failed" | tr , ' ') 2>&1 | b64)
fi
userspace=$(systemctl show --value -p UserspaceTimestampMonotonic)
finish=$(systemctl show --value -p FinishTimestampMonotonic)
say systemd-start-ms=$((userspace / 1000)) systemd-finish-ms=$((finish / 1000)) \
	uptime-ms=$(uptime_ms)

# OpenNebula's context: the CD may be there, nothing here reads it (no one-context).
ctx=$(blkid -L CONTEXT 2>/dev/null)
oc=absent
for p in /usr/sbin/one-contextd /etc/one-context.d; do [ -e "$p" ] && oc=present; done
say context-cd=${ctx:-none} one-context=$oc
say proof=done

case " $cmdline " in
*" hookd.proof_poweroff=no "*) say poweroff=skipped ;;
*)
	say poweroff=now
	systemctl poweroff --no-block
	;;
esac
"""

# The Linux Containers recipe's network for container images (eth0 by DHCP, systemd-networkd).
_ETH0_NETWORK = """\
[Match]
Name=eth0

[Network]
DHCP=true

[DHCPv4]
UseDomains=true

[DHCP]
ClientIdentifier=mac
"""

_WAIT_STEP_S: Final = 20


def _fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", template)
    if leftover:
        raise RootfsBuildError(f"internal: placeholder {leftover.group(0)} was not filled")
    return template


def proof_files(tty: str = PROOF_TTY) -> tuple[dict[str, GuestFile], dict[str, str]]:
    """(files, symlinks) this module adds to the image: the proof unit, its script and
    its enablement, the hostname, and the Linux Containers eth0 network."""
    values = {"MARKER": MARKER, "UNIT": PROOF_UNIT, "SCRIPT": PROOF_SCRIPT, "TTY": tty,
              "STEP": str(_WAIT_STEP_S)}
    unit_path = f"/etc/systemd/system/{PROOF_UNIT}"
    files = {
        unit_path: GuestFile(_fill(_PROOF_UNIT_TEXT, values).encode()),
        PROOF_SCRIPT: GuestFile(_fill(_PROOF_SCRIPT_TEXT, values).encode(), 0o755),
        "/etc/hostname": GuestFile(f"{HOSTNAME}\n".encode()),
        "/etc/systemd/network/eth0.network": GuestFile(_ETH0_NETWORK.encode()),
    }
    links = {f"/etc/systemd/system/multi-user.target.wants/{PROOF_UNIT}": unit_path}
    return files, links


# --------------------------------------------------------------------------------------
# Building and caching
# --------------------------------------------------------------------------------------


def build_debian_rootfs(
    cache_dir: Path | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    packages: Sequence[str] = LXC_PACKAGES,
    size_mb: int = DEFAULT_SIZE_MB,
    mirror: str | None = None,
) -> DebianRootfs:
    """The Debian root filesystem image (see the module docstring), from the cache or built.

    ``cache_dir``: the test cache (default ``$HOOKD_TEST_CACHE`` or ``~/.cache/hookd-test``);
    the image lives under its ``debian-rootfs/``. ``mirror``: the Debian mirror (default
    ``$HOOKD_TEST_DEBIAN_MIRROR``, else deb.debian.org); not part of the cache key.
    Raises :class:`RootfsUnavailable` or :class:`RootfsBuildError`.
    """
    if not _SUITE.match(suite):
        raise ValueError(f"not a Debian suite name: {suite!r}")
    for package in packages:
        if not _PACKAGE.match(package):
            raise ValueError(f"not a Debian package name: {package!r}")
    if not 256 <= size_mb <= 65536:
        raise ValueError(f"size_mb {size_mb} is outside 256..65536")
    mirror = (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")
    files, links = proof_files()
    key = _key(suite, packages, size_mb, files, links)
    base = (cache_dir if cache_dir is not None else default_cache_dir()) / _CACHE_SUBDIR
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RootfsUnavailable(f"Cannot create the rootfs cache {base}: {error}.") from None
    entry = base / f"{suite}-{key[:16]}"
    with cache_lock(base / ".lock"):
        cached = _load_entry(entry, key, from_cache=True)
        if cached is not None:
            os.utime(entry / _MANIFEST)
            return cached
        if entry.exists():  # incomplete or damaged: rebuild it (we hold the lock)
            shutil.rmtree(entry)
        built = _build_entry(base, entry, key, suite, packages, size_mb, mirror, files, links)
        _prune(base, keep=_KEEP)
        return built


def _key(suite: str, packages: Sequence[str], size_mb: int, files: Mapping[str, GuestFile],
         links: Mapping[str, str]) -> str:
    parts = (
        _RECIPE_VERSION, suite, VARIANT, ARCHITECTURE, sorted(set(packages)), sorted(LXC_ENABLE),
        size_mb,
        sorted((p, hashlib.sha256(f.content).hexdigest(), f.mode, f.uid, f.gid)
               for p, f in files.items()),
        sorted(links.items()),
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _load_entry(entry: Path, key: str, *, from_cache: bool) -> DebianRootfs | None:
    try:
        data = json.loads((entry / _MANIFEST).read_text(encoding="utf-8"))
        if data["key"] != key:
            return None
        rootfs = DebianRootfs(
            image=entry / _IMAGE,
            suite=str(data["suite"]),
            architecture=str(data["architecture"]),
            size_mb=int(data["size_mb"]),
            packages=tuple((str(name), str(version)) for name, version in data["packages"]),
            mirror=str(data["mirror"]),
            mmdebstrap_seconds=float(data["mmdebstrap_seconds"]),
            image_seconds=float(data["image_seconds"]),
            from_cache=from_cache,
            key=key,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not rootfs.image.is_file() or rootfs.image.stat().st_size != rootfs.size_mb << 20:
        return None
    return rootfs


def _prune(base: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used entries (and stale build dirs)."""
    entries: list[tuple[float, Path]] = []
    for path in base.iterdir():
        if path.name.startswith(".build-") and path.is_dir():
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > _BUILD_TIMEOUT * 2:
                    shutil.rmtree(path, ignore_errors=True)
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.name.startswith("."):
                entries.append(((path / _MANIFEST).stat().st_mtime, path))
    for _, old in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _tool(program: str, package: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        raise RootfsUnavailable(f"{program} is not installed (Debian package {package}).")
    return path


def _check_mirror(mirror: str, suite: str) -> None:
    """RootfsUnavailable unless the mirror answers for the suite's InRelease."""
    if not mirror.startswith(("http://", "https://")):
        return  # file:, copy: or a sources.list line: mmdebstrap will tell
    url = f"{mirror}/dists/{suite}/InRelease"
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 - http(s) checked above
    try:
        with urllib.request.urlopen(request, timeout=_MIRROR_TIMEOUT):  # noqa: S310
            pass
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RootfsUnavailable(
            f"The Debian mirror is not reachable ({url}: {reason}); building the Debian "
            f"root filesystem needs it (set {MIRROR_ENV} to use another mirror)."
        ) from None


def _run(command: Sequence[str], what: str, *, timeout: float = _TOOL_TIMEOUT,
         cwd: Path | None = None) -> str:
    """stdout + stderr of ``command``; RootfsBuildError when it fails."""
    try:
        done = subprocess.run(
            list(command), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            errors="replace", timeout=timeout, check=False,
            env=dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive"),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RootfsBuildError(f"{what}: `{command[0]}` could not run: {error}") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RootfsBuildError(
            f"{what}: `{' '.join(command)}` failed with exit status {done.returncode}: "
            f"{_last_line(output)}"
        )
    return output


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


def _mmdebstrap(mmdebstrap: str, suite: str, packages: Sequence[str], mirror: str,
                tarball: Path) -> None:
    command = [
        mmdebstrap, "--mode=auto", f"--variant={VARIANT}", f"--architectures={ARCHITECTURE}",
        "--format=tar",
    ]
    if packages:
        command.append("--include=" + ",".join(packages))
    command.append(f"--customize-hook=chroot \"$1\" systemctl enable {' '.join(LXC_ENABLE)}")
    command += [suite, str(tarball), mirror]
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            errors="replace", timeout=_BUILD_TIMEOUT, check=False,
            env=dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive"),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RootfsUnavailable(
            f"mmdebstrap did not finish within {_BUILD_TIMEOUT:.0f} s (a slow mirror?)."
        ) from None
    except OSError as error:
        raise RootfsUnavailable(f"mmdebstrap cannot run: {error}.") from None
    if done.returncode == 0 and tarball.is_file():
        return
    output = done.stdout + done.stderr
    last = _last_line(output)
    if _NETWORK_TROUBLE.search(output):
        raise RootfsUnavailable(f"mmdebstrap could not download from {mirror}: {last}.")
    if os.geteuid() != 0 and _NO_MODE.search(output):
        raise RootfsUnavailable(
            f"mmdebstrap cannot build as an unprivileged user here ({last}); it needs root "
            "or unprivileged user namespaces with subordinate ids (package uidmap, "
            "/etc/subuid)."
        )
    raise RootfsBuildError(f"mmdebstrap failed with exit status {done.returncode}: {last}")


def _build_entry(base: Path, entry: Path, key: str, suite: str, packages: Sequence[str],
                 size_mb: int, mirror: str, files: Mapping[str, GuestFile],
                 links: Mapping[str, str]) -> DebianRootfs:
    mmdebstrap = _tool("mmdebstrap", "mmdebstrap")
    _check_mirror(mirror, suite)
    if not Path(KEYRING).is_file():
        raise RootfsUnavailable(f"{KEYRING} is missing (Debian package debian-archive-keyring).")
    _tool("mkfs.ext4", "e2fsprogs")
    _tool("debugfs", "e2fsprogs")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
    try:
        tarball = work / "rootfs.tar"
        started = time.monotonic()
        _mmdebstrap(mmdebstrap, suite, packages, mirror, tarball)
        mmdebstrap_seconds = time.monotonic() - started
        started = time.monotonic()
        installed = dpkg_packages(tarball)
        ext4_from_tar(tarball, work / _IMAGE, size_mb=size_mb, label="hookd-debian",
                      add_files=files, add_links=links)
        image_seconds = time.monotonic() - started
        tarball.unlink()
        manifest = {
            "key": key,
            "suite": suite,
            "architecture": ARCHITECTURE,
            "variant": VARIANT,
            "size_mb": size_mb,
            "mirror": mirror,
            "included": sorted(set(packages)),
            "packages": [list(item) for item in installed],
            "mmdebstrap_seconds": round(mmdebstrap_seconds, 1),
            "image_seconds": round(image_seconds, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        temporary = work / f"{_MANIFEST}.tmp"
        temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, work / _MANIFEST)
        os.rename(work, entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    built = _load_entry(entry, key, from_cache=False)
    if built is None:
        raise RootfsBuildError(f"The cache entry {entry} is unreadable right after the build.")
    return built


def dpkg_packages(tarball: Path) -> tuple[tuple[str, str], ...]:
    """(package, version) of every installed package, from the tarball's dpkg status."""
    with tarfile.open(tarball) as archive:
        try:
            member = archive.getmember("./var/lib/dpkg/status")
        except KeyError:
            raise RootfsBuildError(f"{tarball.name} has no ./var/lib/dpkg/status") from None
        handle = archive.extractfile(member)
        if handle is None:
            raise RootfsBuildError("./var/lib/dpkg/status is not a regular file")
        text = handle.read().decode("utf-8", errors="replace")
    found: list[tuple[str, str]] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            name, separator, value = line.partition(":")
            if separator and not line.startswith((" ", "\t")):
                fields[name] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found.append((fields["Package"], fields.get("Version", "")))
    return tuple(sorted(found))


# --------------------------------------------------------------------------------------
# Tarball → ext4 (no mounts, no root)
# --------------------------------------------------------------------------------------


@dataclass
class _Inode:
    """What the image must have at a path, as the tarball (or this module) says."""

    kind: int  # stat.S_IF*
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    device: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)


_XATTR_PREFIX: Final = "SCHILY.xattr."


def _guest_path(name: str) -> str:
    """``./usr/bin/x`` → ``/usr/bin/x``; RootfsBuildError for anything that could escape or
    that debugfs cannot quote."""
    if name.startswith("/"):
        raise RootfsBuildError(f"tarball member {name!r} is not relative to the root")
    relative = name[2:] if name.startswith("./") else name
    parts = [part for part in relative.split("/") if part]
    if parts == ["."]:
        parts = []
    if any(part in (".", "..") for part in parts) or any(c in name for c in '"\n\r\0'):
        raise RootfsBuildError(f"tarball member {name!r} has a path this builder refuses")
    return "/" + "/".join(parts)


def ext4_from_tar(
    tarball: Path,
    out: Path,
    *,
    size_mb: int,
    label: str = "rootfs",
    add_files: Mapping[str, GuestFile] | None = None,
    add_links: Mapping[str, str] | None = None,
) -> Path:
    """Write an ext4 image of ``size_mb`` MiB at ``out`` holding the tarball's tree, plus
    ``add_files`` (absolute guest path → file, replacing a member) and ``add_links`` (guest
    path → symlink target). Owners, modes (setuid included), device nodes, hard links,
    symlinks and extended attributes are the tarball's, whoever runs this; nothing is
    mounted. Raises :class:`RootfsBuildError` for a member that could escape the tree."""
    mkfs = _tool("mkfs.ext4", "e2fsprogs")
    debugfs = _tool("debugfs", "e2fsprogs")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hookd-rootfs-", dir=out.parent) as scratch:
        tree = _Staging(Path(scratch) / "root")
        with tarfile.open(tarball) as archive:
            for member in archive:
                tree.add_member(archive, member)
        for path, guest_file in (add_files or {}).items():
            tree.add_file(path, guest_file)
        for path, link_target in (add_links or {}).items():
            tree.add_link(path, link_target)
        tree.add_missing_parents()
        temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.truncate(size_mb << 20)
            _run([mkfs, "-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0",
                  "-d", str(tree.root), str(temporary)], "making the ext4 image")
            _apply_inodes(debugfs, temporary, tree.inodes, Path(scratch))
            os.replace(temporary, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
    return out


class _Staging:
    """The tree unpacked for ``mkfs.ext4 -d`` (contents only) and what each inode must be."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o755)
        self.inodes: dict[str, _Inode] = {}
        self.symlinks: set[str] = set()

    def _place(self, path: str) -> Path:
        """The host path for guest ``path``, its parents made, whatever was there removed."""
        _refuse_through_symlink(path, self.symlinks)
        host = self.root / path.lstrip("/")
        if path != "/":
            host.parent.mkdir(parents=True, exist_ok=True)
            _remove(host)
        self.inodes.pop(path, None)
        self.symlinks.discard(path)
        return host

    def add_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = _guest_path(member.name)
        host = self._place(path)
        xattrs = {
            key[len(_XATTR_PREFIX):]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items()
            if key.startswith(_XATTR_PREFIX)
        }
        kind: int
        device = (0, 0)
        if member.isdir():
            host.mkdir(mode=0o755, exist_ok=True)
            kind = stat.S_IFDIR
        elif member.isreg():
            source = archive.extractfile(member)
            if source is None:
                raise RootfsBuildError(f"cannot read tarball member {member.name}")
            with source, open(host, "wb") as written:
                shutil.copyfileobj(source, written, 1 << 20)
            os.chmod(host, 0o644)
            kind = stat.S_IFREG
        elif member.issym():
            os.symlink(member.linkname, host)
            self.symlinks.add(path)
            kind = stat.S_IFLNK
        elif member.islnk():
            # Another name for an inode already described: nothing more to record.
            target = _guest_path(member.linkname)
            if target not in self.inodes or self.inodes[target].kind != stat.S_IFREG:
                raise RootfsBuildError(f"hard link {member.name} -> {member.linkname}: no "
                                       "regular file there earlier in the tarball")
            os.link(self.root / target.lstrip("/"), host)
            return
        elif member.ischr() or member.isblk() or member.isfifo():
            # Made by debugfs: an unprivileged builder cannot mknod.
            kind = (stat.S_IFCHR if member.ischr() else
                    stat.S_IFBLK if member.isblk() else stat.S_IFIFO)
            device = (member.devmajor, member.devminor)
        else:
            raise RootfsBuildError(f"tarball member {member.name} has type {member.type!r}, "
                                   "which this builder refuses")
        self.inodes[path] = _Inode(kind, member.mode & 0o7777, member.uid, member.gid, device,
                                   xattrs)

    def add_file(self, guest_path: str, guest_file: GuestFile) -> None:
        path = _absolute_guest_path(guest_path)
        self._place(path).write_bytes(guest_file.content)
        self.inodes[path] = _Inode(stat.S_IFREG, guest_file.mode, guest_file.uid, guest_file.gid)

    def add_link(self, guest_path: str, target: str) -> None:
        path = _absolute_guest_path(guest_path)
        os.symlink(target, self._place(path))
        self.symlinks.add(path)
        self.inodes[path] = _Inode(stat.S_IFLNK, 0o777, 0, 0)

    def add_missing_parents(self) -> None:
        """Directories no member described (parents of added files): root's, 0755."""
        for path in list(self.inodes):
            parent = path.rsplit("/", 1)[0] or "/"
            while parent not in self.inodes:
                self.inodes[parent] = _Inode(stat.S_IFDIR, 0o755, 0, 0)
                parent = parent.rsplit("/", 1)[0] or "/"


def _absolute_guest_path(path: str) -> str:
    if not path.startswith("/"):
        raise RootfsBuildError(f"guest path {path!r} is not absolute")
    return _guest_path("." + path)


def _refuse_through_symlink(path: str, symlinks: set[str]) -> None:
    """A tarball never stores a path below one of its own symlinks; unpacking one would
    write wherever the link points (outside the staging directory for /etc -> /x)."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        if "/" + "/".join(parts[:depth]) in symlinks:
            raise RootfsBuildError(f"{path} lies below a symlink of the same tarball")


def _remove(host: Path) -> None:
    if host.is_symlink() or host.is_file():
        host.unlink()
    elif host.is_dir():
        shutil.rmtree(host)


def _quoted(path: str) -> str:
    return f'"{path}"'


def _apply_inodes(debugfs: str, image: Path, inodes: Mapping[str, _Inode],
                  scratch: Path) -> None:
    """Owners, modes, device nodes and extended attributes, in one ``debugfs -w`` run."""
    commands: list[str] = []
    values = scratch / "xattr"
    values.mkdir()
    for number, path in enumerate(sorted(inodes)):
        inode = inodes[path]
        if inode.kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            directory, name = path.rsplit("/", 1)
            kind = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p"}[inode.kind]
            device = f" {inode.device[0]} {inode.device[1]}" if kind != "p" else ""
            commands += [f"cd {_quoted(directory or '/')}",
                         f"mknod {_quoted(name)} {kind}{device}", "cd /"]
        quoted = _quoted(path)
        commands += [f"sif {quoted} mode 0{inode.kind | inode.mode:o}",
                     f"sif {quoted} uid {inode.uid}", f"sif {quoted} gid {inode.gid}"]
        for index, (name, value) in enumerate(sorted(inode.xattrs.items())):
            value_file = values / f"{number}.{index}"
            value_file.write_bytes(value)
            commands.append(f"ea_set -f {value_file} {quoted} {name}")
    script = scratch / "debugfs.cmd"
    script.write_text("\n".join(commands) + "\n", encoding="utf-8")
    output = _run([debugfs, "-w", "-f", str(script), str(image)], "setting owners and modes")
    problems = [line for line in output.splitlines()
                if line and not line.startswith(("debugfs", "Allocated inode:"))]
    if problems:
        raise RootfsBuildError(f"debugfs reported: {problems[0]}")


# --------------------------------------------------------------------------------------
# Booting a template with it
# --------------------------------------------------------------------------------------

#: How long one Debian boot may take before the harness kills QEMU (it takes about 25 s
#: under TCG on 2 shared cores: systemd reaches its target about 17 s after the kernel
#: starts, then powers off).
DEBIAN_BOOT_TIMEOUT: Final = 300.0


@dataclass(frozen=True)
class DebianGuest:
    """Debian's cloud kernel (the PVH vmlinux), the harness's initrd and the Debian root
    filesystem: the files behind a template hookd fixed for KVM, for the boot harness."""

    kernel: DebianKernel
    initrd: Path
    rootfs: DebianRootfs

    def boot(
        self,
        template_xml: str,
        *,
        kernel_id: int,
        initrd_id: int,
        rootfs_id: int,
        dev_prefixes: Mapping[int, str] | None = None,
        timeout: float = DEBIAN_BOOT_TIMEOUT,
        extra_append: str = "",
    ) -> BootResult:
        """Boot ``template_xml`` (``<VMTEMPLATE>``/``<VM>`` as oned returns it, or a bare
        ``<TEMPLATE>``) the way OpenNebula's KVM driver would, on this guest's files:
        ``$FILE[IMAGE_ID=kernel_id]`` is the vmlinux, ``$FILE[IMAGE_ID=initrd_id]`` the
        initrd, the DISK with ``IMAGE_ID=rootfs_id`` the Debian image; ROOT, KERNEL_CMD,
        CONTEXT, MEMORY and VCPU are the template's (:func:`hookd.testing.boot.boot_template`).
        ``dev_prefixes``: image id → the image's DEV_PREFIX; a Linux Containers image has
        none, so only a DISK with DEV_PREFIX=vd (what hookd sets) becomes a virtio disk.
        Read the outcome from :attr:`BootResult.systemd_reached_target` and
        :meth:`BootResult.problems`."""
        return boot_template(
            template_xml,
            {kernel_id: self.kernel.vmlinux, initrd_id: self.initrd},
            {rootfs_id: self.rootfs.image},
            dev_prefixes=dev_prefixes,
            timeout=timeout,
            extra_append=extra_append,
        )


def prepare_debian_guest(
    workdir: Path,
    cache_dir: Path | None = None,
    *,
    kernel_package: str = DEFAULT_KERNEL_PACKAGE,
) -> DebianGuest:
    """The Debian kernel (:func:`~hookd.testing.debian_kernel.fetch_debian_kernel`), the
    harness's initrd for it (written to ``workdir``) and the Debian root filesystem
    (:func:`build_debian_rootfs`), all cached under ``cache_dir`` (default
    ``$HOOKD_TEST_CACHE`` or ``~/.cache/hookd-test``). Raises
    :class:`~hookd.testing.boot_guest.BootUnavailable` (QEMU or a tool missing;
    :class:`RootfsUnavailable` is one) or
    :class:`~hookd.testing.debian_kernel.KernelUnavailable`."""
    require_boot_tools()
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    kernel = fetch_debian_kernel(cache, package=kernel_package)
    initrd = build_initrd(kernel, workdir / "initrd.cpio.gz", cache_dir=cache / "boot-initrds")
    rootfs = build_debian_rootfs(cache)
    return DebianGuest(kernel, initrd, rootfs)
