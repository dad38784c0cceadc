"""A real Debian kernel for tests: fetched with apt, unpacked, its vmlinux extracted, cached.

Stable API (also used by the QEMU boot test)::

    from hookd.testing.debian_kernel import DebianKernel, KernelUnavailable, fetch_debian_kernel

    try:
        kernel = fetch_debian_kernel()                    # linux-image-cloud-amd64
    except KernelUnavailable as error:
        pytest.skip(error.reason)
    kernel.vmlinux        # ELF vmlinux with the PVH note (boot it with qemu -kernel)
    kernel.vmlinuz        # the bzImage as packaged
    kernel.config         # boot/config-<version>
    kernel.modules_dir    # lib/modules/<version>, to build an initrd from

How it works:

1. The meta package (``linux-image-cloud-amd64``) is resolved to the real package and version
   with ``apt-cache show --no-all-versions`` (its ``Depends: linux-image-<abi>-cloud-amd64 (= v)``).
2. That exact package is fetched with ``apt-get download`` (no root needed) into the cache. Only
   when a look-up or the download fails because the package lists are missing, and only as root,
   ``apt-get update`` is run once and the step retried.
3. ``dpkg-deb -x`` unpacks it; ``hookd.kernels.extract_vmlinux`` writes
   ``boot/vmlinux-<version>`` beside ``boot/vmlinuz-<version>`` and ``boot/config-<version>``.
4. Everything lives under ``<cache>/debian-kernels/<package>_<debian version>/`` (cache =
   ``cache_dir``, else ``$HOOKD_TEST_CACHE``, else ``~/.cache/hookd-test``), built in a temporary
   directory and renamed into place, under a lock, so concurrent test processes share one copy.
   A complete entry is reused without touching apt; when apt cannot resolve the package (no
   lists, offline), the last entry fetched for that meta package is reused.

Failures to obtain the kernel (no apt/dpkg-deb, no lists, no network, no ``lz4``) raise
``KernelUnavailable`` with a one-sentence ``reason``; a failure of hookd's own extraction is not
masked and propagates as ``hookd.kernels.KernelExtractionError``.

Debian packages used: ``apt``, ``dpkg`` (always on Debian), ``lz4`` (cloud kernels' payload).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hookd.kernels import extract_vmlinux, inspect_kernel
from hookd.kernels.extract import TOOLS

DEFAULT_PACKAGE: Final = "linux-image-cloud-amd64"
CACHE_ENV: Final = "HOOKD_TEST_CACHE"
_ENTRY_FILE: Final = "kernel.json"
_LOOKUP_TIMEOUT: Final = 120.0
_DOWNLOAD_TIMEOUT: Final = 900.0
_UPDATE_TIMEOUT: Final = 900.0
_UNPACK_TIMEOUT: Final = 600.0
_MISSING_LISTS: Final = re.compile(
    r"Unable to locate package|Can't select|has no installation candidate|No packages found|"
    r"not available|Couldn't find any package"
)
_PACKAGE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


class KernelUnavailable(Exception):
    """The Debian kernel cannot be had here (tools, package lists or network missing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class DebianKernel:
    """One unpacked Debian kernel package. All paths are absolute and exist."""

    #: The kernel release (``uname -r``), e.g. ``6.1.0-56-cloud-amd64``; it names the files.
    version: str
    #: The binary package, e.g. ``linux-image-6.1.0-56-cloud-amd64``.
    package: str
    #: Its Debian version, e.g. ``6.1.192-2``.
    package_version: str
    #: The downloaded ``.deb``.
    package_file: Path
    #: The unpacked package (``boot/``, ``lib/modules/``, …).
    root: Path
    #: ``boot/vmlinuz-<version>``: the bzImage as packaged.
    vmlinuz: Path
    #: ``boot/vmlinux-<version>``: the ELF vmlinux extracted from it.
    vmlinux: Path
    #: ``boot/config-<version>``.
    config: Path
    #: ``lib/modules/<version>``.
    modules_dir: Path


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "hookd-test"


def fetch_debian_kernel(
    cache_dir: Path | None = None, package: str = DEFAULT_PACKAGE
) -> DebianKernel:
    """The Debian kernel ``package`` (a meta package or a real ``linux-image-<abi>-<flavour>``),
    downloaded, unpacked and extracted under the cache; see the module docstring."""
    if not _PACKAGE_NAME.match(package):
        raise ValueError(f"not a Debian package name: {package!r}")
    base = (cache_dir if cache_dir is not None else default_cache_dir()) / "debian-kernels"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KernelUnavailable(f"Cannot create the kernel cache {base}: {error}.") from None
    with cache_lock(base / ".lock"):
        return _fetch_locked(base, package)


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (a cache's lock file): one process fills a cache
    entry, the others wait and then find it."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fetch_locked(base: Path, package: str) -> DebianKernel:
    index = base / f"{package}.json"
    missing = [tool for tool in ("apt-cache", "apt-get", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        cached = _load_index(base, index)
        if cached is not None:
            return cached
        raise KernelUnavailable(
            f"{', '.join(missing)} not found: fetching a Debian kernel needs a Debian or Ubuntu "
            "host (packages apt and dpkg)."
        )
    try:
        real, version = _resolve(package)
    except KernelUnavailable:
        cached = _load_index(base, index)
        if cached is not None:
            return cached
        raise
    entry = base / f"{real}_{version}"
    kernel = _load_entry(entry)
    if kernel is None:
        if entry.exists():  # incomplete or damaged: rebuild it (we hold the lock)
            shutil.rmtree(entry)
        kernel = _build_entry(base, entry, real, version)
    _write_json(index, {"entry": entry.name})
    return kernel


def _run(command: Sequence[str], *, timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    """(exit status, stdout + stderr) of a command; KernelUnavailable if it cannot run in time."""
    environment = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KernelUnavailable(
            f"`{' '.join(command)}` did not finish within {timeout:.0f} s."
        ) from None
    except OSError as error:
        raise KernelUnavailable(f"`{' '.join(command)}` cannot run: {error}.") from None
    return done.returncode, done.stdout + done.stderr


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "W:", "dpkg-deb"))]
    return (errors or lines or ["no output"])[-1]


def _apt_update_if_lists_missing(output: str) -> bool:
    """Run ``apt-get update`` once when ``output`` shows missing package lists and we are root."""
    if not _MISSING_LISTS.search(output) or os.geteuid() != 0:
        return False
    status, update_output = _run(["apt-get", "update"], timeout=_UPDATE_TIMEOUT)
    if status != 0:
        raise KernelUnavailable(f"`apt-get update` failed: {_last_line(update_output)}.")
    return True


def _show(package: str) -> tuple[int, str]:
    return _run(["apt-cache", "show", "--no-all-versions", package], timeout=_LOOKUP_TIMEOUT)


def _resolve(package: str) -> tuple[str, str]:
    """(real binary package, Debian version) for ``package``."""
    status, output = _show(package)
    if (status != 0 or not output.strip()) and _apt_update_if_lists_missing(
        output or "No packages found"
    ):
        status, output = _show(package)
    if status != 0 or "Package:" not in output:
        raise KernelUnavailable(
            f"apt does not know {package} ({_last_line(output)}); as root, `apt-get update` "
            "fetches the package lists."
        )
    fields = _fields(output)
    for alternative in re.split(r"[,|]", fields.get("Depends", "")):
        m = re.match(r"^\s*(linux-image-[a-z0-9.+-]+)\s*\(\s*=\s*([^)\s]+)\s*\)", alternative)
        if m and m.group(1) != package:
            return m.group(1), m.group(2)
    if package.startswith("linux-image-") and "Version" in fields:
        return package, fields["Version"]
    raise KernelUnavailable(
        f"{package} neither is a kernel image package nor depends on one with an exact version."
    )


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.split("\n\n", 1)[0].splitlines():
        key, separator, value = line.partition(":")
        if separator and not line.startswith((" ", "\t")):
            fields[key.strip()] = value.strip()
    return fields


def _download(real: str, version: str, directory: Path) -> Path:
    command = ["apt-get", "download"]
    if os.geteuid() == 0:
        # As root apt drops privileges to _apt, which cannot write into a private directory.
        command += ["-o", "APT::Sandbox::User=root"]
    command.append(f"{real}={version}")
    status, output = _run(command, cwd=directory, timeout=_DOWNLOAD_TIMEOUT)
    if status != 0 and _apt_update_if_lists_missing(output):
        status, output = _run(command, cwd=directory, timeout=_DOWNLOAD_TIMEOUT)
    debs = sorted(directory.glob(f"{real}_*.deb"))
    if status != 0 or len(debs) != 1:
        raise KernelUnavailable(
            f"`apt-get download {real}={version}` failed: {_last_line(output)}."
        )
    return debs[0]


def _build_entry(base: Path, entry: Path, real: str, version: str) -> DebianKernel:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
    try:
        deb = _download(real, version, work)
        root = work / "root"
        status, output = _run(["dpkg-deb", "-x", str(deb), str(root)], timeout=_UNPACK_TIMEOUT)
        if status != 0:
            raise KernelUnavailable(f"`dpkg-deb -x {deb.name}` failed: {_last_line(output)}.")
        release = _release(root, real)
        vmlinuz = root / "boot" / f"vmlinuz-{release}"
        config = root / "boot" / f"config-{release}"
        modules = _modules_dir(root, release)
        if not config.is_file():
            raise KernelUnavailable(f"{real} has no boot/config-{release}.")
        compression = inspect_kernel(vmlinuz).compression
        if compression in TOOLS and shutil.which(TOOLS[compression][0]) is None:
            program, debian_package, _ = TOOLS[compression]
            raise KernelUnavailable(
                f"{vmlinuz.name} has a {compression} payload and {program} is not installed "
                f"(Debian package {debian_package})."
            )
        extract_vmlinux(vmlinuz, root / "boot" / f"vmlinux-{release}")
        _write_json(
            work / _ENTRY_FILE,
            {
                "version": release,
                "package": real,
                "package_version": version,
                "package_file": deb.name,
                "modules_dir": str(modules.relative_to(work)),
            },
        )
        os.rename(work, entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    loaded = _load_entry(entry)
    if loaded is None:
        raise KernelUnavailable(f"The cache entry {entry} vanished right after it was written.")
    return loaded


def _release(root: Path, real: str) -> str:
    expected = real.removeprefix("linux-image-")
    if (root / "boot" / f"vmlinuz-{expected}").is_file():
        return expected
    found = sorted(path.name for path in (root / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise KernelUnavailable(f"{real} does not contain exactly one boot/vmlinuz-* ({found}).")
    return found[0].removeprefix("vmlinuz-")


def _modules_dir(root: Path, release: str) -> Path:
    for candidate in (
        root / "lib" / "modules" / release,
        root / "usr" / "lib" / "modules" / release,
    ):
        if candidate.is_dir():
            return candidate
    raise KernelUnavailable(f"The package for {release} has no lib/modules/{release}.")


def _write_json(path: Path, data: dict[str, str]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _load_index(base: Path, index: Path) -> DebianKernel | None:
    try:
        name = json.loads(index.read_text(encoding="utf-8"))["entry"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        return None
    return _load_entry(base / name)


def _load_entry(entry: Path) -> DebianKernel | None:
    """The cached kernel in ``entry`` if it is complete, else None."""
    try:
        data = json.loads((entry / _ENTRY_FILE).read_text(encoding="utf-8"))
        release = str(data["version"])
        kernel = DebianKernel(
            version=release,
            package=str(data["package"]),
            package_version=str(data["package_version"]),
            package_file=entry / str(data["package_file"]),
            root=entry / "root",
            vmlinuz=entry / "root" / "boot" / f"vmlinuz-{release}",
            vmlinux=entry / "root" / "boot" / f"vmlinux-{release}",
            config=entry / "root" / "boot" / f"config-{release}",
            modules_dir=entry / str(data["modules_dir"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = (kernel.package_file, kernel.vmlinuz, kernel.vmlinux, kernel.config)
    if not all(path.is_file() for path in files) or not kernel.modules_dir.is_dir():
        return None
    return kernel
