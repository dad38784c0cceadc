"""The guest side of hookd's boot proof: a busybox root filesystem and an initrd.

Used through :mod:`hookd.testing.boot` (which re-exports the public names); see its docstring
for the whole picture. Everything the guest runs is plain POSIX sh for busybox ash, written
here, small on purpose, and reports on the serial console with lines of the form
``HOOKD-BOOT key=value [key=value ...]`` (values never contain blanks: anything that could is
base64 and its key ends in ``-b64``), which :class:`hookd.testing.boot.BootResult` parses.

Root filesystem (:func:`build_rootfs`): Debian's statically linked busybox with every applet as
a symlink, ``/etc/passwd`` and ``/etc/group``, the app (by default :data:`REPORT_APP`, a shell
script that reports its argv, environment, working directory and ids and keeps running) and
``/sbin/init``, which mirrors what one-context does with the START_SCRIPT and reports each
step. Built with ``mkfs.ext4 -d`` (no mounts, no root needed): ownership and device nodes are
then set with ``debugfs -w``, so the image is the same whoever builds it.

Initrd (:func:`build_initrd`): busybox, the Debian kernel's virtio/ext4/CD modules in the order
of shared/reference/qemu-boot-facts.md (dependencies read from each module's ``.modinfo``), and
an init that loads them, waits for the ``root=`` device, mounts it read-write only if ``rw`` is
on the command line (read-only otherwise, as the kernel itself would: init/do_mounts.c), and
``switch_root``s. Written as a newc cpio by this module (device nodes need no root), gzip'd.

Debian packages: ``busybox-static``, ``e2fsprogs`` (mkfs.ext4, debugfs). Kernel modules are
read from the unpacked Debian kernel package (:class:`~hookd.testing.debian_kernel.DebianKernel`).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hookd.testing.debian_kernel import DebianKernel, cache_lock

__all__ = [
    "INITRD_MODULES",
    "MARKER",
    "REPORT_APP",
    "REPORT_DIR",
    "BootUnavailable",
    "GuestBuildError",
    "GuestFile",
    "GuestGroup",
    "GuestUser",
    "build_initrd",
    "build_rootfs",
    "find_busybox",
    "report_app_script",
    "resolve_modules",
]

#: Prefix of every line the guest prints for the harness.
MARKER: Final = "HOOKD-BOOT"
#: Where the default app lives in the root filesystem.
REPORT_APP: Final = "/app/bin/report-app"
#: World-writable (sticky) directory where the app leaves ``app-reported.<pid>`` after its
#: report, so the init knows it can power off.
REPORT_DIR: Final = "/run/hookd-boot"
#: qemu-boot-facts.md: the modules a Debian kernel needs for a virtio root disk (pci and mmio),
#: ext4 and the context CD, in an insmod order that works, plus ``sd_mod`` for a root disk on
#: virtio-scsi (an ``sd`` target, oned's default prefix). Built-in ones are skipped.
INITRD_MODULES: Final = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "virtio_mmio", "virtio_blk", "crc16", "crc32c_generic", "mbcache", "jbd2", "ext4",
    "scsi_common", "scsi_mod", "libata", "ata_piix", "cdrom", "sr_mod", "virtio_scsi", "sd_mod",
    "isofs",
)  # fmt: skip

_BUSYBOX_CANDIDATES: Final = ("/bin/busybox", "/usr/bin/busybox")
_SAFE_PATH: Final = re.compile(r"^(/[A-Za-z0-9_.+@-]+)+$")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TOOL_TIMEOUT: Final = 300.0
# Bumped whenever the way an artefact is built changes, so cached artefacts are rebuilt.
_RECIPE_VERSION: Final = "1"


class BootUnavailable(Exception):
    """Something the boot proof needs is not on this host (a program, busybox-static, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GuestBuildError(Exception):
    """Building the root filesystem or the initrd failed (a tool failed, bad input)."""


@dataclass(frozen=True)
class GuestUser:
    """An ``/etc/passwd`` entry; the home directory is created, owned by the user."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/bin/sh"


@dataclass(frozen=True)
class GuestGroup:
    """An ``/etc/group`` entry."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestFile:
    """A file to put into the root filesystem."""

    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


# --------------------------------------------------------------------------------------
# Guest programs
# --------------------------------------------------------------------------------------

# Shell for a guest's init or proof unit (after its say() is defined): one report line on
# the root file system, which device, mounted how, writable or not.
ROOT_MOUNT_PROBE = r"""r_devno='' r_opts='' r_rest=''
while read -r _id _parent devno _root mnt opts rest; do
	[ "$mnt" = / ] || continue
	r_devno=$devno r_opts=$opts r_rest=$rest
done </proc/self/mountinfo
r_after=${r_rest#*- }
r_fstype=${r_after%% *}
r_src=${r_after#* }
r_src=${r_src%% *}
r_dev=$(sed -n 's/^DEVNAME=//p' "/sys/dev/block/$r_devno/uevent" 2>/dev/null)
[ -n "$r_dev" ] && r_dev=/dev/$r_dev || r_dev=unknown
if (: >/.hookd-rw-probe) 2>/dev/null; then rm -f /.hookd-rw-probe && w=yes; else w=no; fi
say root-device=$r_dev root-devno=$r_devno root-source=$r_src root-fstype=$r_fstype \
	root-mode=${r_opts%%,*} root-writable=$w
"""

_REPORT_APP = r"""#!/bin/sh
# report-app: stands in for a container image's process. It reports what it was started
# with, exactly as the kernel handed it over (/proc/$$/cmdline and /proc/$$/environ are the
# argv and environment of the exec; for this #!/bin/sh script the kernel puts "/bin/sh" and
# the script's path in front of argv[1:]), then keeps running like a server would. (Which
# signals it ignores is not reported: busybox ash ignores SIGQUIT in its own process, so a
# shell script cannot see what it inherited.)
me=$$
enc() { base64 -w 0 <"$1"; }
ids() {
	while IFS= read -r line; do
		case $line in
		Uid:*) set -- ${line#Uid:} && uid=$1,$2,$3,$4 ;;
		Gid:*) set -- ${line#Gid:} && gid=$1,$2,$3,$4 ;;
		Groups:*) set -- ${line#Groups:} && groups=$(IFS=, && echo "$*") ;;
		esac
	done <"/proc/$me/status"
}
cmdline=$(enc "/proc/$me/cmdline")
environ=$(enc "/proc/$me/environ")
cwd=$(printf '%s' "$(readlink "/proc/$me/cwd")" | base64 -w 0)
uid='' gid='' groups=''
ids
report="@MARKER@ app-pid=$me app-uid=$uid app-gid=$gid app-groups=$groups
@MARKER@ app-cwd-b64=$cwd
@MARKER@ app-cmdline-b64=$cmdline
@MARKER@ app-environ-b64=$environ
@MARKER@ app=running"
# The init made /dev/console writable for everyone (a test-harness concession): report there,
# or on stdout (the launcher's log file) if that fails.
{ printf '%s\n' "$report" >/dev/console; } 2>/dev/null || printf '%s\n' "$report"
printf 'report-app %s: reported\n' "$me"
: >"@REPORT_DIR@/app-reported.$me"
while :; do sleep 3600; done
"""

# /sbin/init: mirrors one-context (OpenNebula/one-apps context-linux, identical in
# OpenNebula/addon-context-linux): src/usr/sbin/one-contextd and
# src/etc/one-context.d/net-97-start-script. Each step says which part it mirrors.
_ROOTFS_INIT = r"""#!/bin/sh
# /sbin/init of hookd's boot-proof root filesystem (hookd/testing/boot_guest.py). Reports
# on the console with "@MARKER@ key=value" lines; powers off with `reboot -f` (QEMU runs
# with -no-reboot).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "@MARKER@ $*"; }
b64() { base64 -w 0; }
# Centiseconds since boot (/proc/uptime has two decimals; "1xx - 100" avoids octal).
now_cs() { read -r up _ </proc/uptime && echo $((${up%.*} * 100 + 1${up#*.} - 100)); }
poweroff_now() {
	say poweroff=now
	sync
	reboot -f
	sleep 10
}

# -- a Linux system's early mounts --------------------------------------------------------
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /sys/kernel ] || mount -t sysfs sysfs /sys
grep -q '^[^ ]* /dev devtmpfs ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# Errors and worse only, so kernel chatter cannot split our lines (panics still print).
echo 4 >/proc/sys/kernel/printk
say init=start pid=$$ uptime-cs=$(now_cs)
# Harness knobs (the kernel ignores unknown dotted parameters): hookd.start_script_limit=S
# and hookd.app_wait=S override the values this file was built with.
script_limit=@SCRIPT_LIMIT@ app_wait=@APP_WAIT@
set -f
for arg in $(cat /proc/cmdline); do
	case $arg in
	hookd.start_script_limit=*) script_limit=${arg#*=} ;;
	hookd.app_wait=*) app_wait=${arg#*=} ;;
	esac
done
set +f
case $script_limit in '' | *[!0-9]*) script_limit=@SCRIPT_LIMIT@ ;; esac
case $app_wait in '' | *[!0-9]*) app_wait=@APP_WAIT@ ;; esac
say hostname-b64=$(printf '%s' "$(uname -n)" | b64)

# -- the root filesystem: which device, mounted how --------------------------------------
""" + ROOT_MOUNT_PROBE + r"""
# The app runs unprivileged and reports on the console (test-harness concession).
chmod 0622 /dev/console
mkdir -p -m 1777 @REPORT_DIR@

# -- one-contextd: find and mount the context CD -----------------------------------------
# one-contextd get_new_context: `blkid -t LABEL=CONTEXT`, `mount -o ro` on a fresh
# `mktemp -d ${RUNTIME_DIR}/mount.XXXXXX`, 6 tries one second apart. busybox has no blkid:
# read the ISO 9660 volume label (primary volume descriptor, sector 16, bytes 40-71) of each
# CD and virtio disk that is not the root.
RUNTIME_DIR=/var/run/one-context
TMP_DIR=/var/lib/one-context/tmp
SCRIPT_OUTPUT=$TMP_DIR/script-output.log
mkdir -m 0700 -p "$RUNTIME_DIR" "$TMP_DIR"
ctx='' tried=''
for d in /dev/sr* /dev/vd*; do
	[ -b "$d" ] && [ "$d" != "$r_dev" ] || continue
	tried=$tried${tried:+,}${d#/dev/}
	magic=$(dd if="$d" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=1 count=5 2>/dev/null)
	[ "$magic" = CD001 ] || continue
	label=$(dd if="$d" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=32 2>/dev/null)
	label=${label%% *}
	if [ "$label" = CONTEXT ]; then ctx=$d && break; fi
done
[ -n "$tried" ] || tried=none
if [ -z "$ctx" ]; then
	say context-missing=yes context-tried=$tried
	poweroff_now
fi
MOUNT_DIR=$(mktemp -d "$RUNTIME_DIR/mount.XXXXXX")
tries=6
until mount -o ro "$ctx" "$MOUNT_DIR" 2>/dev/null; do
	tries=$((tries - 1))
	[ $tries -gt 0 ] || { say context-mount-failed=$ctx && poweroff_now; }
	sleep 1
done
say context-device=$ctx context-tried=$tried

# -- one-contextd run_context: copy context.sh, export every variable it sets -------------
# (export_rc_vars: the names of lines matching ^[a-zA-Z\-\_0-9]*=, then `. file`, export).
# one-contextd forces the C locale and keeps the originals in _one_orig_*.
export _one_orig_LANG="${LANG}" _one_orig_LC_ALL="${LC_ALL}"
export LANG=C LC_ALL=C
CONTEXT_FILE=$RUNTIME_DIR/context.sh.network
if [ ! -f "$MOUNT_DIR/context.sh" ]; then
	say context-sh-missing=yes
	poweroff_now
fi
cp "$MOUNT_DIR/context.sh" "$CONTEXT_FILE" && chmod 0400 "$CONTEXT_FILE"
ONE_VARS=$(grep -E '^[a-zA-Z\-\_0-9]*=' "$CONTEXT_FILE" | sed 's/=.*$//')
. "$CONTEXT_FILE"
for v in $ONE_VARS; do export "$v"; done
export MOUNT_DIR RUNTIME_DIR CONTEXT_FILE
say context-vars=$(echo $ONE_VARS | wc -w)

# -- net-97-start-script ------------------------------------------------------------------
# START_SCRIPT_BASE64 (decoded) wins over START_SCRIPT; the text goes to a file in a 0700
# mktemp dir, is made executable and executed directly, from ${MOUNT_DIR}, synchronously.
# one-contextd sends stdout and stderr to ${TMP_DIR}/script-output.log (a file, so children
# the script leaves running do not hold it up) and logs the exit code; under systemd stdin
# is /dev/null. net-97 runs under bash: a script without a shebang fails execve with ENOEXEC
# and bash then runs it as a bash script. bash is not in busybox, so here ash would run it;
# hookd's START_SCRIPTs always start with #!/bin/sh, so that difference never applies.
S_TMP=$(mktemp -d "$TMP_DIR/one-context.XXXXXX")
chmod 0700 "$S_TMP"
S_FILE=$S_TMP/one-start-script
kind=none decoded=0
if [ -n "${START_SCRIPT_BASE64}" ]; then
	# Under net-97's `set -e` a failed decode ends net-97 there, with base64's status.
	echo "${START_SCRIPT_BASE64}" | base64 -d >"$S_FILE" || decoded=$?
	kind=base64
elif [ -n "${START_SCRIPT}" ]; then
	echo "${START_SCRIPT}" >"$S_FILE"
	kind=plain
fi
say start-script=$kind
if [ $decoded != 0 ]; then
	say start-script-decode-failed=$decoded start-script-exit=$decoded
	kind=none
elif [ $kind != none ]; then
	# one-context waits for ever; this watchdog only reports it and powers off. It is the
	# background job, so the START_SCRIPT itself is started like one-context starts it (a
	# background job of a non-interactive shell would get SIGINT and SIGQUIT ignored).
	(sleep "$script_limit" && say start-script-hung=$script_limit && poweroff_now) &
	watchdog=$!
	t0=$(now_cs)
	(cd "$MOUNT_DIR" && chmod +x "$S_FILE" && exec "$S_FILE") >"$SCRIPT_OUTPUT" 2>&1 </dev/null
	rc=$?
	t1=$(now_cs)
	kill $watchdog 2>/dev/null
	say start-script-exit=$rc start-script-ms=$(((t1 - t0) * 10))
	say start-script-output-b64=$(b64 <"$SCRIPT_OUTPUT")
fi
rm -rf "$S_TMP"
# one-contextd goes on with the next scripts (net-98-execute-scripts, net-99-report-ready).
say context=continued
# one-contextd cleanup: lazy unmount of the context CD, remove the mount dir.
umount -l "$MOUNT_DIR" && rm -rf "$MOUNT_DIR" && say context-unmounted=yes

# -- wait for the app's report, check it keeps running, power off -------------------------
if [ $kind != none ]; then
	i=0
	reported=''
	while [ $i -lt $((app_wait * 10)) ]; do
		for f in @REPORT_DIR@/app-reported.*; do [ -e "$f" ] && reported=$f; done
		[ -z "$reported" ] || break
		i=$((i + 1))
		sleep 0.1
	done
	if [ -n "$reported" ]; then
		pid=${reported##*.}
		sleep 1
		alive=no
		{ read -r st <"/proc/$pid/stat"; } 2>/dev/null && st=${st##*) } && [ "${st%% *}" != Z ] &&
			alive=yes
		say app-wait=reported app-alive=$alive
	else
		say app-wait=timeout app-wait-s=$app_wait
	fi
fi
poweroff_now
"""

_INITRD_INIT = r"""#!/bin/sh
# /init of hookd's boot-proof initrd (hookd/testing/boot_guest.py): load the drivers the
# Debian kernel builds as modules, wait for root=, mount it as the kernel would (read-write
# only with `rw` on the command line), switch_root. Reports with "@MARKER@ key=value".
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "@MARKER@ $*"; }
# PID 1 must not exit (the kernel would panic without saying why): report and power off.
stop() {
	say "$@"
	sync
	reboot -f
	sleep 10
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say initrd=start
for m in @MODULES@; do
	insmod "/lib/modules/hookd/$m.ko" || say initrd-insmod-failed=$m
done
say initrd-modules=@MODULE_COUNT@ initrd-builtin=@BUILTIN@
# The kernel's own rules (init/do_mounts.c): root= names the device, `ro` is the default,
# `rw` and `ro` are flags (the last one wins), rootfstype= and rootflags= are passed on.
root='' mode=ro fstype='' flags='' init=/sbin/init
set -f
for arg in $(cat /proc/cmdline); do
	case $arg in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=${arg#rootflags=} ;;
	init=*) init=${arg#init=} ;;
	rw) mode=rw ;;
	ro) mode=ro ;;
	esac
done
set +f
[ -n "$root" ] || stop initrd-no-root-arg=yes
case $root in
/dev/*) ;;
*) stop initrd-root-unsupported=$root ;;
esac
i=0
until [ -b "$root" ]; do
	if [ $i -ge @ROOT_WAIT_TICKS@ ]; then
		devices=$(ls /sys/class/block | tr '\n' , | sed 's/,$//')
		stop initrd-root-missing=$root initrd-root-wait-s=@ROOT_WAIT@ \
			initrd-block-devices=${devices:-none}
	fi
	i=$((i + 1))
	sleep 0.1
done
mkdir -p /newroot
if ! mount ${fstype:+-t "$fstype"} -o "$mode${flags:+,$flags}" "$root" /newroot; then
	stop initrd-mount-failed=$root initrd-root-mode=$mode
fi
# init= names a path in the new root: resolve its symlinks there, as the kernel will after
# switch_root (a distribution's /sbin/init is /sbin -> usr/sbin, then /usr/sbin/init ->
# /lib/systemd/systemd: an absolute link, which [ -x ] here would follow into the initrd).
in_root() {
	rest=${1#/} real='' hops=0
	while [ -n "$rest" ]; do
		part=${rest%%/*}
		case $rest in */*) rest=${rest#*/} ;; *) rest='' ;; esac
		case $part in
		'' | .) continue ;;
		..) real=${real%/*} && continue ;;
		esac
		if [ -L "/newroot$real/$part" ]; then
			hops=$((hops + 1))
			[ $hops -le 40 ] || return 1
			target=$(readlink "/newroot$real/$part")
			case $target in /*) real='' ;; esac
			rest=${target#/}${rest:+/$rest}
		else
			real=$real/$part
		fi
	done
	echo "${real:-/}"
}
init_real=$(in_root "$init") || init_real=''
[ -n "$init_real" ] && [ -f "/newroot$init_real" ] && [ -x "/newroot$init_real" ] ||
	stop initrd-no-init=$init
say initrd-root=$root initrd-root-mode=$mode initrd-init=$init
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
"""


def _fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    leftover = re.search(r"@[A-Z_]+@", template)
    if leftover:
        raise GuestBuildError(f"internal: placeholder {leftover.group(0)} was not filled")
    return template


def report_app_script() -> bytes:
    """The default app (:data:`REPORT_APP`): reports its argv, environment, working
    directory and ids on the console, then keeps running."""
    return _fill(_REPORT_APP, {"MARKER": MARKER, "REPORT_DIR": REPORT_DIR}).encode()


def _rootfs_init(script_limit: int, app_wait: int) -> bytes:
    if script_limit < 1 or app_wait < 1:
        raise GuestBuildError("start_script_limit and app_wait must be at least 1 second")
    return _fill(
        _ROOTFS_INIT,
        {
            "MARKER": MARKER,
            "REPORT_DIR": REPORT_DIR,
            "SCRIPT_LIMIT": str(script_limit),
            "APP_WAIT": str(app_wait),
        },
    ).encode()


# --------------------------------------------------------------------------------------
# Host tools
# --------------------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP (a static program)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            if phentsize < 4 or phnum > 256:
                return False
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    if len(table) < phentsize * phnum:
        return False
    return all(
        struct.unpack_from("<I", table, index * phentsize)[0] != 3  # PT_INTERP
        for index in range(phnum)
    )


def find_busybox() -> Path:
    """Debian's statically linked busybox (package busybox-static), or BootUnavailable."""
    for candidate in _BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path.resolve()
    raise BootUnavailable(
        "no statically linked busybox in /bin or /usr/bin (Debian package busybox-static)"
    )


def _require_program(program: str, package: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        raise BootUnavailable(f"{program} is not installed (Debian package {package})")
    return path


def _run(command: Sequence[str], what: str, *, cwd: Path | None = None,
         with_stderr: bool = False) -> str:
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_TOOL_TIMEOUT,
            check=False,
            env=dict(os.environ, LC_ALL="C"),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GuestBuildError(f"{what}: `{' '.join(command)}` could not run: {error}") from None
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip().splitlines()
        raise GuestBuildError(
            f"{what}: `{' '.join(command)}` failed with exit status {done.returncode}: "
            f"{output[-1] if output else 'no output'}"
        )
    return done.stdout + done.stderr if with_stderr else done.stdout


def _busybox_applets(busybox: Path) -> list[str]:
    """The applets' install paths (``bin/sh``, ``usr/bin/env``, ...), from the binary."""
    listing = _run([str(busybox), "--list-full"], "listing busybox applets")
    applets = sorted({line.strip().strip("/") for line in listing.splitlines() if line.strip()})
    if "bin/sh" not in applets:
        raise GuestBuildError(f"{busybox} has no sh applet")
    return applets


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Caching
# --------------------------------------------------------------------------------------


def _place(out: Path, build: Callable[[Path], None], cache_dir: Path | None, kind: str,
           suffix: str, key: str) -> Path:
    """Build into ``out`` atomically; with ``cache_dir``, build once per ``key`` there (as
    ``<kind>-<key><suffix>``) and hard-link (or copy) the cached artefact to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if cache_dir is None:
        _build_atomically(out, build)
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{kind}-{key[:24]}{suffix}"
    with cache_lock(cache_dir / ".lock"):
        if not cached.is_file():
            _build_atomically(cached, build)
            _prune(cache_dir, f"{kind}-*{suffix}")
        else:
            os.utime(cached)
    if out.exists() or out.is_symlink():
        out.unlink()
    try:
        os.link(cached, out)
    except OSError:
        shutil.copyfile(cached, out)
    return out


def _prune(cache_dir: Path, pattern: str, keep: int = 4) -> None:
    """Remove all but the ``keep`` newest cached artefacts matching ``pattern`` (old recipes
    pile up otherwise; a file still linked elsewhere stays there)."""
    entries = sorted(cache_dir.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _build_atomically(out: Path, build: Callable[[Path], None]) -> None:
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        build(temporary)
        os.replace(temporary, out)
    finally:
        if temporary.exists():
            temporary.unlink()


def _key(*parts: object) -> str:
    return hashlib.sha256(repr((_RECIPE_VERSION, *parts)).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# Root filesystem
# --------------------------------------------------------------------------------------


def _check_guest_path(path: str) -> str:
    if not _SAFE_PATH.match(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise GuestBuildError(
            f"guest path {path!r} must be absolute and made of letters, digits and '_.+@-'"
        )
    return path


def _accounts(users: Sequence[GuestUser], groups: Sequence[GuestGroup]) -> tuple[str, str]:
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    group = ["root:x:0:"]
    names: set[str] = {"root"}
    for user in users:
        if not _NAME.match(user.name) or user.name in names:
            raise GuestBuildError(f"bad or duplicate user name {user.name!r}")
        names.add(user.name)
        for value in (user.uid, user.gid):
            if not 0 <= value < 2**31:
                raise GuestBuildError(f"user {user.name}: id {value} out of range")
        _check_guest_path(user.home)
        _check_guest_path(user.shell)
        passwd.append(f"{user.name}:x:{user.uid}:{user.gid}:{user.name}:{user.home}:{user.shell}")
    group_names: set[str] = {"root"}
    for entry in groups:
        if not _NAME.match(entry.name) or entry.name in group_names:
            raise GuestBuildError(f"bad or duplicate group name {entry.name!r}")
        group_names.add(entry.name)
        if not 0 < entry.gid < 2**31:
            raise GuestBuildError(f"group {entry.name}: gid {entry.gid} out of range")
        for member in entry.members:
            if member not in names:
                raise GuestBuildError(f"group {entry.name}: member {member!r} is no user")
        group.append(f"{entry.name}:x:{entry.gid}:{','.join(entry.members)}")
    return "\n".join(passwd) + "\n", "\n".join(group) + "\n"


@dataclass
class _Tree:
    """What goes into the file system, with the owner and mode each path must end up with."""

    files: dict[str, GuestFile] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # mode, uid, gid
    links: dict[str, str] = field(default_factory=dict)

    def directory(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            self.dirs.setdefault("/" + "/".join(parts[:depth]), (0o755, 0, 0))
        self.dirs[path] = (mode, uid, gid)

    def parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent and parent not in self.dirs:
            self.directory(parent)


def build_rootfs(
    out: Path,
    *,
    app_files: Mapping[str, GuestFile] | None = None,
    users: Sequence[GuestUser] = (),
    groups: Sequence[GuestGroup] = (),
    size_mb: int = 48,
    start_script_limit: int = 120,
    app_wait: int = 60,
    cache_dir: Path | None = None,
) -> Path:
    """An ext4 image (whole file, no partition table, like docker_downloader's) at ``out``.

    ``app_files``: guest path → file (default: :data:`REPORT_APP`, the reporting app).
    ``users``/``groups``: extra ``/etc/passwd``/``/etc/group`` entries (root is always there);
    home directories are created, owned by their user. ``start_script_limit``: how long (whole
    seconds) the init lets the START_SCRIPT run before it reports it hung and powers off
    (one-context would wait for ever). ``app_wait``: how long it waits for the app's report.
    Both can be overridden per boot on the kernel command line (``hookd.start_script_limit=``,
    ``hookd.app_wait=``; see :func:`hookd.testing.boot.boot`). With ``cache_dir``,
    the image is built once per distinct input there and hard-linked to ``out``.
    Raises :class:`BootUnavailable` (busybox-static or e2fsprogs missing) or
    :class:`GuestBuildError`.
    """
    busybox = find_busybox()
    mkfs = _require_program("mkfs.ext4", "e2fsprogs")
    debugfs = _require_program("debugfs", "e2fsprogs")
    if app_files is None:
        app_files = {REPORT_APP: GuestFile(report_app_script(), 0o755)}
    passwd, group = _accounts(users, groups)
    init = _rootfs_init(start_script_limit, app_wait)
    if not 16 <= size_mb <= 4096:
        raise GuestBuildError(f"size_mb {size_mb} is outside 16..4096")

    tree = _Tree()
    for path, mode in (
        ("/bin", 0o755), ("/sbin", 0o755), ("/usr/bin", 0o755), ("/usr/sbin", 0o755),
        ("/etc", 0o755), ("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755),
        ("/tmp", 0o1777), ("/root", 0o700),  # noqa: S108 - the guest's /tmp ("/var/log", 0o755), ("/var/lib/one-context", 0o755),
        ("/mnt", 0o755),
    ):  # fmt: skip
        tree.directory(path, mode)
    tree.links["/var/run"] = "../run"
    tree.files["/bin/busybox"] = GuestFile(busybox.read_bytes(), 0o755)
    for applet in _busybox_applets(busybox):
        guest = "/" + applet
        if guest != "/bin/busybox":
            tree.parent(guest)
            tree.links[guest] = "/bin/busybox"
    tree.files["/etc/passwd"] = GuestFile(passwd.encode())
    tree.files["/etc/group"] = GuestFile(group.encode())
    tree.files["/sbin/init"] = GuestFile(init, 0o755)
    tree.links.pop("/sbin/init", None)
    for user in users:
        if user.home != "/":
            tree.directory(user.home, 0o755, user.uid, user.gid)
    for path, guest_file in app_files.items():
        _check_guest_path(path)
        tree.parent(path)
        tree.links.pop(path, None)
        tree.files[path] = guest_file

    key = _key(
        "rootfs",
        _sha256_file(busybox),
        sorted((p, hashlib.sha256(f.content).hexdigest(), f.mode, f.uid, f.gid)
               for p, f in tree.files.items()),
        sorted(tree.dirs.items()),
        sorted(tree.links.items()),
        size_mb,
    )

    def build(target: Path) -> None:
        _make_ext4(tree, target, size_mb, mkfs, debugfs)

    return _place(out, build, cache_dir, "rootfs", ".ext4", key)


def _make_ext4(tree: _Tree, target: Path, size_mb: int, mkfs: str, debugfs: str) -> None:
    with tempfile.TemporaryDirectory(prefix="hookd-rootfs-") as staging_name:
        staging = Path(staging_name)
        for path in sorted(tree.dirs):
            (staging / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for path, guest_file in tree.files.items():
            host = staging / path.lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(guest_file.content)
        for path, link_target in tree.links.items():
            host = staging / path.lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.symlink_to(link_target)
        with open(target, "wb") as handle:
            handle.truncate(size_mb * 1024 * 1024)
        _run(
            [mkfs, "-q", "-F", "-L", "hookd-root", "-E", "root_owner=0:0", "-d", str(staging),
             str(target)],
            "making the root filesystem",
        )  # fmt: skip
    # mkfs -d copies the builder's uid/gid and umask-dependent modes: set them exactly, and
    # create the device nodes the kernel needs before devtmpfs is mounted.
    commands: list[str] = []
    for path, (mode, uid, gid) in sorted(tree.dirs.items()):
        commands += _inode(path, stat.S_IFDIR | mode, uid, gid)
    for path, guest_file in sorted(tree.files.items()):
        commands += _inode(path, stat.S_IFREG | guest_file.mode, guest_file.uid, guest_file.gid)
    for path in sorted(tree.links):
        commands += [f"sif {path} uid 0", f"sif {path} gid 0"]
    for path, kind, major, minor, mode in (
        ("/dev/console", "c", 5, 1, 0o600), ("/dev/null", "c", 1, 3, 0o666),
    ):  # fmt: skip
        directory, name = path.rsplit("/", 1)
        commands += [f"cd {directory}", f"mknod {name} {kind} {major} {minor}", "cd /"]
        commands += _inode(path, stat.S_IFCHR | mode, 0, 0)
    with tempfile.NamedTemporaryFile("w", prefix="hookd-debugfs-", suffix=".cmd") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        output = _run(
            [debugfs, "-w", "-f", script.name, str(target)], "setting owners", with_stderr=True
        )
    problems = [
        line
        for line in output.splitlines()
        if line and not line.startswith(("debugfs", "Allocated inode:"))
    ]
    if problems:
        raise GuestBuildError(f"debugfs reported: {problems[0]}")


def _inode(path: str, mode: int, uid: int, gid: int) -> list[str]:
    return [f"sif {path} mode 0{mode:o}", f"sif {path} uid {uid}", f"sif {path} gid {gid}"]


# --------------------------------------------------------------------------------------
# Initrd
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Module:
    name: str
    path: Path
    depends: tuple[str, ...]


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        zstd = _require_program("zstd", "zstd")
        done = subprocess.run(
            [zstd, "-dc", str(path)], capture_output=True, check=False, timeout=_TOOL_TIMEOUT
        )
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise GuestBuildError(f"cannot decompress {path}: {message}")
        return done.stdout
    return data


def _modinfo_depends(data: bytes, name: str) -> tuple[str, ...]:
    """``depends=`` of a module, from its ELF ``.modinfo`` section."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise GuestBuildError(f"module {name} is not a little-endian ELF64 object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff + shentsize * shnum > len(data) or shstrndx >= shnum or shentsize < 64:
        raise GuestBuildError(f"module {name} has a malformed section table")

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name_offset, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        if offset + size > len(data):
            raise GuestBuildError(f"module {name} has a section beyond the file")
        return name_offset, offset, size

    _, strtab, strsize = section(shstrndx)
    for index in range(shnum):
        name_offset, offset, size = section(index)
        end = data.find(b"\0", strtab + name_offset, strtab + strsize)
        if data[strtab + name_offset : end] != b".modinfo":
            continue
        for entry in data[offset : offset + size].split(b"\0"):
            if entry.startswith(b"depends="):
                value = entry[len(b"depends=") :].decode()
                return tuple(_canonical(d) for d in value.split(",") if d)
        return ()
    raise GuestBuildError(f"module {name} has no .modinfo section")


def _index_modules(modules_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko*")):
        match = re.match(r"^(.+)\.ko(\.xz|\.gz|\.zst)?$", path.name)
        if match:
            found.setdefault(_canonical(match.group(1)), path)
    return found


def _builtin(modules_dir: Path) -> set[str]:
    try:
        text = (modules_dir / "modules.builtin").read_text()
    except OSError:
        return set()
    return {_canonical(Path(line.strip()).name.split(".ko")[0]) for line in text.splitlines()
            if line.strip()}


def resolve_modules(
    kernel: DebianKernel, wanted: Sequence[str] = INITRD_MODULES
) -> tuple[list[_Module], list[str]]:
    """(modules to insmod in order, wanted modules that are built in) for ``kernel``.

    Paths are found with a walk of ``lib/modules/<version>/kernel`` (Debian's package has no
    modules.dep: depmod runs at install time); each module's dependencies come from its
    ``.modinfo`` and are loaded before it, keeping ``wanted``'s order otherwise.
    """
    available = _index_modules(kernel.modules_dir)
    builtin = _builtin(kernel.modules_dir)
    ordered: list[_Module] = []
    placed: set[str] = set()
    builtins: list[str] = []

    def place(name: str, chain: tuple[str, ...]) -> None:
        name = _canonical(name)
        if name in placed:
            return
        if name in builtin:
            placed.add(name)
            builtins.append(name)
            return
        if name in chain:
            raise GuestBuildError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = available.get(name)
        if path is None:
            raise GuestBuildError(
                f"kernel {kernel.version} has no module {name} (neither built in nor under "
                f"{kernel.modules_dir / 'kernel'})"
            )
        depends = _modinfo_depends(_module_bytes(path), name)
        for dependency in depends:
            place(dependency, (*chain, name))
        placed.add(name)
        ordered.append(_Module(name, path, depends))

    for name in wanted:
        place(name, ())
    return ordered, builtins


class _Cpio:
    """A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{value:08X}"
            for value in (
                self._inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                len(encoded), 0,
            )
        )  # fmt: skip
        self._inode += 1
        self._chunks += [header.encode(), encoded, b"\0" * (-(110 + len(encoded)) % 4)]
        self._chunks += [data, b"\0" * (-len(data) % 4)]

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._inode = 0
        self._entry("TRAILER!!!", 0)
        return b"".join(self._chunks)


def build_initrd(
    kernel: DebianKernel,
    out: Path,
    *,
    modules: Sequence[str] = INITRD_MODULES,
    root_wait: float = 8.0,
    cache_dir: Path | None = None,
) -> Path:
    """A gzip'd newc cpio initrd for ``kernel`` at ``out`` (see the module docstring).

    ``root_wait``: seconds to wait for the ``root=`` device after the modules are loaded
    (virtio and IDE probing is synchronous, so a device missing by then never comes).
    With ``cache_dir``, built once per distinct input there and hard-linked to ``out``.
    """
    busybox = find_busybox()
    ordered, builtins = resolve_modules(kernel, modules)
    names = [f"{index:02d}-{module.name}" for index, module in enumerate(ordered)]
    init = _fill(
        _INITRD_INIT,
        {
            "MARKER": MARKER,
            "MODULES": " ".join(names),
            "MODULE_COUNT": str(len(ordered)),
            "BUILTIN": ",".join(builtins) or "none",
            "ROOT_WAIT": f"{root_wait:g}",
            "ROOT_WAIT_TICKS": str(max(1, round(root_wait * 10))),
        },
    ).encode()
    key = _key(
        "initrd",
        kernel.version,
        kernel.package_version,
        _sha256_file(busybox),
        [(m.name, str(m.path.relative_to(kernel.modules_dir))) for m in ordered],
        hashlib.sha256(init).hexdigest(),
    )

    def build(target: Path) -> None:
        archive = _Cpio()
        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys",
                          "newroot", "lib", "lib/modules", "lib/modules/hookd"):
            archive.directory(directory)
        archive.char_device("dev/console", 5, 1, 0o600)
        archive.file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in _busybox_applets(busybox):
            if applet != "bin/busybox" and applet.count("/") <= 2:
                archive.symlink(applet, "/bin/busybox")
        archive.file("init", init, 0o755)
        for name, module in zip(names, ordered, strict=True):
            archive.file(f"lib/modules/hookd/{name}.ko", _module_bytes(module.path))
        target.write_bytes(gzip.compress(archive.finish(), compresslevel=6, mtime=0))

    return _place(out, build, cache_dir, "initrd", ".cpio.gz", key)
