"""hookd.testing.debian_kernel without the network: fake apt tools around a locally built .deb,
the apt-get update rule, the cache and its offline fallback; and the skip-or-fail CI rule."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hookd.testing.debian_kernel import KernelUnavailable, fetch_debian_kernel

from .builders import build_bzimage, build_elf, config_text, kernel_payload
from .ci import in_ci, require_program, unavailable

VERSION = "9.9.9-1-test-amd64"
PACKAGE = f"linux-image-{VERSION}"
DEBIAN_VERSION = "9.9.9-1"

FAKE_APT_CACHE = """#!/bin/sh
echo "apt-cache $*" >> "$FAKE_STATE/log"
if [ ! -e "$FAKE_STATE/lists" ]; then
    echo "E: No packages found" >&2
    exit 100
fi
case "$3" in
linux-image-test-meta)
    printf 'Package: linux-image-test-meta\\nVersion: 1\\nDepends: %s (= %s)\\n\\n' \
        "$FAKE_PACKAGE" "$FAKE_VERSION"
    ;;
*)
    echo "E: No packages found" >&2
    exit 100
    ;;
esac
"""

FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$FAKE_STATE/log"
case "$1" in
update)
    touch "$FAKE_STATE/lists"
    ;;
download)
    if [ -e "$FAKE_STATE/offline" ]; then
        echo "E: Failed to fetch http://deb.debian.org/x  Temporary failure resolving" >&2
        exit 100
    fi
    cp "$FAKE_DEB" .
    ;;
esac
"""


def build_deb(directory: Path) -> Path:
    """A kernel package laid out like Debian's: boot/vmlinuz, boot/config, lib/modules."""
    require_program("dpkg-deb", "dpkg")
    root = directory / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {DEBIAN_VERSION}\nArchitecture: amd64\n"
        "Maintainer: test <test@example.org>\nDescription: test kernel\n"
    )
    (root / "boot").mkdir()
    vmlinuz = build_bzimage(kernel_payload(build_elf().data, "xz"))
    (root / "boot" / f"vmlinuz-{VERSION}").write_bytes(vmlinuz)
    (root / "boot" / f"config-{VERSION}").write_bytes(config_text())
    (root / "lib" / "modules" / VERSION / "kernel").mkdir(parents=True)
    deb = directory / f"{PACKAGE}_{DEBIAN_VERSION}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake apt-cache/apt-get in front of the real dpkg-deb; returns the state directory."""
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("apt-cache", FAKE_APT_CACHE), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_PACKAGE", PACKAGE)
    monkeypatch.setenv("FAKE_VERSION", DEBIAN_VERSION)
    monkeypatch.setenv("FAKE_DEB", str(build_deb(tmp_path)))
    return state


def log(state: Path) -> list[str]:
    path = state / "log"
    return path.read_text().splitlines() if path.exists() else []


def test_fetch_downloads_unpacks_extracts_and_caches(fake_apt: Path, tmp_path: Path) -> None:
    (fake_apt / "lists").touch()
    cache = tmp_path / "cache"

    kernel = fetch_debian_kernel(cache, package="linux-image-test-meta")

    assert (kernel.version, kernel.package, kernel.package_version) == (
        VERSION,
        PACKAGE,
        DEBIAN_VERSION,
    )
    entry = cache / "debian-kernels" / f"{PACKAGE}_{DEBIAN_VERSION}"
    assert kernel.root == entry / "root"
    assert kernel.vmlinuz == entry / "root" / "boot" / f"vmlinuz-{VERSION}"
    assert kernel.vmlinux.read_bytes() == build_elf().data
    assert kernel.config.name == f"config-{VERSION}"
    assert kernel.modules_dir == entry / "root" / "lib" / "modules" / VERSION
    assert kernel.package_file.parent == entry
    assert not any(p.name.startswith(".build-") for p in (cache / "debian-kernels").iterdir())
    downloads = [line for line in log(fake_apt) if line.startswith("apt-get download")]
    assert downloads == [
        f"apt-get download -o APT::Sandbox::User=root {PACKAGE}={DEBIAN_VERSION}"
        if os.geteuid() == 0
        else f"apt-get download {PACKAGE}={DEBIAN_VERSION}"
    ]

    again = fetch_debian_kernel(cache, package="linux-image-test-meta")
    assert again == kernel
    assert len([line for line in log(fake_apt) if "download" in line]) == 1  # cached


def test_missing_lists_trigger_one_apt_get_update_as_root(
    fake_apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    kernel = fetch_debian_kernel(tmp_path / "cache", package="linux-image-test-meta")

    assert kernel.version == VERSION
    assert [line for line in log(fake_apt) if line == "apt-get update"] == ["apt-get update"]


def test_missing_lists_without_root_are_reported_not_updated(
    fake_apt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(KernelUnavailable, match="apt does not know linux-image-test-meta"):
        fetch_debian_kernel(tmp_path / "cache", package="linux-image-test-meta")
    assert "apt-get update" not in log(fake_apt)


def test_download_failure_is_kernel_unavailable_and_leaves_no_debris(
    fake_apt: Path, tmp_path: Path
) -> None:
    (fake_apt / "lists").touch()
    (fake_apt / "offline").touch()
    cache = tmp_path / "cache"

    with pytest.raises(KernelUnavailable, match="Temporary failure resolving"):
        fetch_debian_kernel(cache, package="linux-image-test-meta")
    assert [p.name for p in (cache / "debian-kernels").iterdir() if p.is_dir()] == []


def test_cached_kernel_is_used_when_apt_cannot_resolve(fake_apt: Path, tmp_path: Path) -> None:
    (fake_apt / "lists").touch()
    cache = tmp_path / "cache"
    first = fetch_debian_kernel(cache, package="linux-image-test-meta")
    (fake_apt / "lists").unlink()  # apt now knows nothing (and we are not updating as non-root)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: 1000)
        assert fetch_debian_kernel(cache, package="linux-image-test-meta") == first
    index = json.loads((cache / "debian-kernels" / "linux-image-test-meta.json").read_text())
    assert index == {"entry": f"{PACKAGE}_{DEBIAN_VERSION}"}


def test_incomplete_cache_entry_is_rebuilt(fake_apt: Path, tmp_path: Path) -> None:
    (fake_apt / "lists").touch()
    cache = tmp_path / "cache"
    kernel = fetch_debian_kernel(cache, package="linux-image-test-meta")
    kernel.vmlinux.unlink()

    rebuilt = fetch_debian_kernel(cache, package="linux-image-test-meta")

    assert rebuilt == kernel
    assert rebuilt.vmlinux.read_bytes() == build_elf().data
    assert len([line for line in log(fake_apt) if "download" in line]) == 2


def test_without_apt_the_kernel_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KernelUnavailable, match="needs a Debian or Ubuntu host"):
        fetch_debian_kernel(tmp_path / "cache")


def test_cache_dir_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKD_TEST_CACHE", str(tmp_path / "from-env"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KernelUnavailable):
        fetch_debian_kernel()
    assert (tmp_path / "from-env" / "debian-kernels").is_dir()


def test_bad_package_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a Debian package name"):
        fetch_debian_kernel(tmp_path, package="linux-image; rm -rf /")


# --- the skip-or-fail rule ---------------------------------------------------------------------


def test_unavailable_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "", "false", "0"):
        if value is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", value)
        assert not in_ci()
        with pytest.raises(pytest.skip.Exception, match="no mirror"):
            unavailable("no mirror")


def test_unavailable_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("true", "TRUE", " True "):
        monkeypatch.setenv("CI", value)
        assert in_ci()
        with pytest.raises(pytest.fail.Exception, match=r"cannot run in CI \(CI=true\): no mirror"):
            unavailable("no mirror")


def test_require_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert require_program("sh", "dash").endswith("/sh")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Debian package lz4"):
        require_program("lz4", "lz4")
