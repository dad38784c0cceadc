"""hookd.testing.rootfs without the network and without QEMU: the tarball → ext4 conversion
(checked inode by inode with debugfs), the proof unit's files, and the build's cache and
error rules with a fake mmdebstrap."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hookd.testing import rootfs as rootfs_module
from hookd.testing.boot_guest import GuestFile
from hookd.testing.rootfs import (
    PROOF_SCRIPT,
    PROOF_TTY,
    PROOF_UNIT,
    RootfsBuildError,
    RootfsUnavailable,
    build_debian_rootfs,
    dpkg_packages,
    ext4_from_tar,
    proof_files,
)
from tests.kernels.ci import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("e2fsprogs")]

DPKG_STATUS = (
    "Package: systemd\nStatus: install ok installed\nVersion: 252.38-1~deb12u1\n\n"
    "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
    "Package: init\nStatus: install ok installed\nVersion: 1.66\n"
)
ACL = bytes.fromhex("02000000" "01000700ffffffff" "04000500ffffffff" "20000500ffffffff")


@pytest.fixture
def debugfs() -> str:
    for program in ("mkfs.ext4", "debugfs"):
        if (shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")) is None:
            unavailable(f"{program} is not installed (Debian package e2fsprogs)")
    found = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    assert found is not None
    return found


def add(archive: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, *,
        data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0, link: str = "",
        device: tuple[int, int] = (0, 0), pax: dict[str, str] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, link
    info.devmajor, info.devminor = device
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mtime = 1_700_000_000
    if pax:
        info.pax_headers = pax
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tarball(path: Path, extra: list[dict[str, object]] | None = None) -> Path:
    """A small root filesystem laid out the way mmdebstrap writes one (./-relative names)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        add(archive, "./", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr/bin/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr/bin/passwd", data=b"\x7fELF passwd", mode=0o4755)
        add(archive, "./usr/bin/perl", data=b"perl", mode=0o755)
        add(archive, "./usr/bin/perl5.36.0", tarfile.LNKTYPE, link="./usr/bin/perl")
        add(archive, "./usr/bin/[", data=b"test", mode=0o755)
        add(archive, "./bin", tarfile.SYMTYPE, link="usr/bin", mode=0o777)
        add(archive, "./sbin", tarfile.SYMTYPE, link="usr/sbin", mode=0o777)
        add(archive, "./usr/sbin/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr/sbin/init", tarfile.SYMTYPE, link="/lib/systemd/systemd", mode=0o777)
        add(archive, "./dev/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./dev/console", tarfile.CHRTYPE, mode=0o600, device=(5, 1))
        add(archive, "./dev/null", tarfile.CHRTYPE, mode=0o666, device=(1, 3))
        add(archive, "./var/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./var/log/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./var/log/journal/", tarfile.DIRTYPE, mode=0o2755, gid=999,
            pax={"SCHILY.xattr.system.posix_acl_access": ACL.decode("utf-8", "surrogateescape")})
        add(archive, "./home/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./home/user/", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000)
        add(archive, "./home/user/.profile", data=b"# hidden\n", mode=0o600, uid=1000, gid=1000)
        add(archive, "./usr/lib/systemd/system/x\\x2dy.slice", data=b"[Unit]\n")
        add(archive, "./var/lib/dpkg/status", data=DPKG_STATUS.encode())
        add(archive, "./etc/", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./etc/hostname", data=b"builder-host\n")
        for item in extra or []:
            name = str(item.pop("name"))
            add(archive, name, **item)  # type: ignore[arg-type]
    return path


def stat_of(debugfs: str, image: Path, path: str) -> str:
    done = subprocess.run([debugfs, "-R", f'stat "{path}"', str(image)], capture_output=True,
                          text=True, check=True)
    assert "File not found" not in done.stderr, done.stderr
    return done.stdout


def inode_fields(text: str) -> dict[str, str]:
    fields = {}
    for key in ("Inode", "Type", "Mode", "User", "Group", "Links"):
        match = re.search(rf"\b{key}:\s+(\S+)", text)
        if match:
            fields[key] = match.group(1)
    return fields


def test_tarball_becomes_an_ext4_image_with_the_tarballs_owners_and_modes(
    debugfs: str, tmp_path: Path
) -> None:
    tarball = make_tarball(tmp_path / "root.tar")
    image = ext4_from_tar(
        tarball, tmp_path / "out" / "root.ext4", size_mb=32, label="test-root",
        add_files={"/etc/hostname": GuestFile(b"debian\n"),
                   "/usr/local/sbin/tool": GuestFile(b"#!/bin/sh\n", 0o750, 0, 4)},
        add_links={"/etc/systemd/system/multi-user.target.wants/x.service":
                   "/etc/systemd/system/x.service"},
    )
    assert image.stat().st_size == 32 << 20
    assert not [p for p in image.parent.iterdir() if p != image]  # no scratch left behind

    def fields(path: str) -> dict[str, str]:
        return inode_fields(stat_of(debugfs, image, path))

    assert fields("/usr/bin/passwd") | {"Inode": ""} == {
        "Inode": "", "Type": "regular", "Mode": "04755", "User": "0", "Group": "0", "Links": "1"}
    perl, perl_version = fields("/usr/bin/perl"), fields("/usr/bin/perl5.36.0")
    assert perl["Inode"] == perl_version["Inode"] and perl["Links"] == "2"  # one inode
    assert fields("/dev/console")["Type"] == "character"
    assert fields("/dev/console")["Mode"] == "0600"
    assert fields("/dev/null")["Mode"] == "0666"
    assert fields("/home/user")["User"] == "1000" and fields("/home/user")["Mode"] == "0700"
    assert fields("/home/user/.profile")["Group"] == "1000"
    assert fields("/var/log/journal")["Mode"] == "02755"
    assert fields("/var/log/journal")["Group"] == "999"
    assert fields("/usr/bin/[")["Type"] == "regular"
    assert fields("/usr/lib/systemd/system/x\\x2dy.slice")["Type"] == "regular"
    assert fields("/usr/local/sbin/tool")["Mode"] == "0750"
    assert fields("/usr/local/sbin/tool")["Group"] == "4"
    assert fields("/usr/local")["Mode"] == "0755"  # made for the added file
    assert fields("/sbin")["Type"] == "symlink"
    assert fields("/etc/systemd/system/multi-user.target.wants/x.service")["Type"] == "symlink"
    # Contents, and the POSIX ACL as an extended attribute.
    for path, content in (("/etc/hostname", b"debian\n"), ("/usr/bin/perl", b"perl")):
        done = subprocess.run([debugfs, "-R", f"cat {path}", str(image)], capture_output=True,
                              check=True)
        assert done.stdout == content
    listing = subprocess.run([debugfs, "-R", "ea_list /var/log/journal", str(image)],
                             capture_output=True, text=True, check=True).stdout
    assert "system.posix_acl_access" in listing
    assert 'Fast link dest: "usr/sbin"' in stat_of(debugfs, image, "/sbin")
    # e2fsck finds nothing to fix.
    e2fsck = shutil.which("e2fsck") or shutil.which("e2fsck", path="/usr/sbin:/sbin")
    assert e2fsck is not None
    check = subprocess.run([e2fsck, "-fn", str(image)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"name": "../escape", "data": b"x"}, "has a path this builder refuses"),
        ({"name": "/etc/absolute", "data": b"x"}, "is not relative to the root"),
        ({"name": "./bin/through-link", "data": b"x"}, "lies below a symlink"),
        ({"name": "./usr/bin/hard", "kind": tarfile.LNKTYPE, "link": "./nowhere"},
         "no regular file there earlier"),
        ({"name": './etc/"quoted"', "data": b"x"}, "has a path this builder refuses"),
    ],
)
def test_members_that_could_escape_are_refused(debugfs: str, tmp_path: Path,
                                               extra: dict[str, object], message: str) -> None:
    tarball = make_tarball(tmp_path / "root.tar", [extra])
    with pytest.raises(RootfsBuildError, match=message):
        ext4_from_tar(tarball, tmp_path / "root.ext4", size_mb=32)
    assert not (tmp_path / "root.ext4").exists()


def test_dpkg_packages_lists_installed_packages(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "root.tar")
    assert dpkg_packages(tarball) == (("init", "1.66"), ("systemd", "252.38-1~deb12u1"))


def test_proof_unit_is_enabled_and_writes_to_the_serial_port() -> None:
    files, links = proof_files()
    unit = files[f"/etc/systemd/system/{PROOF_UNIT}"].content.decode()
    assert f"ExecStart={PROOF_SCRIPT}" in unit and "WantedBy=multi-user.target" in unit
    assert "Type=exec" in unit
    assert links == {f"/etc/systemd/system/multi-user.target.wants/{PROOF_UNIT}":
                     f"/etc/systemd/system/{PROOF_UNIT}"}
    script = files[PROOF_SCRIPT]
    assert script.mode == 0o755
    text = script.content.decode()
    assert text.startswith("#!/bin/sh\n") and f"tty={PROOF_TTY}\n" in text
    assert "systemctl is-system-running --wait" in text
    assert not re.search(r"@[A-Z_]+@", text + unit)
    sh = shutil.which("sh")
    assert sh is not None
    subprocess.run([sh, "-n", "-c", text], check=True)  # it parses


# -- the build, with a fake mmdebstrap ---------------------------------------------------

FAKE_MMDEBSTRAP = """#!/bin/sh
echo "mmdebstrap $*" >>"$FAKE_STATE/log"
if [ -e "$FAKE_STATE/fail" ]; then
    cat "$FAKE_STATE/fail" >&2
    exit 1
fi
# mmdebstrap [options] SUITE TARGET MIRROR: the target is the second-to-last argument.
target=$(eval "echo \\${$(($# - 1))}")
cp "$FAKE_TARBALL" "$target"
"""


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debugfs: str) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "mmdebstrap"
    program.write_text(FAKE_MMDEBSTRAP)
    program.chmod(0o755)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"keys")
    monkeypatch.setattr(rootfs_module, "KEYRING", str(keyring))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_TARBALL", str(make_tarball(tmp_path / "fake-root.tar")))
    monkeypatch.delenv("HOOKD_TEST_DEBIAN_MIRROR", raising=False)
    return state


def calls(state: Path) -> list[str]:
    log = state / "log"
    return log.read_text().splitlines() if log.exists() else []


MIRROR = "file:///srv/debian-mirror"  # not http: no reachability check


def test_build_runs_mmdebstrap_once_and_reuses_the_cached_image(
    fake_mmdebstrap: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    built = build_debian_rootfs(cache, size_mb=256, mirror=MIRROR)

    assert not built.from_cache
    assert built.image.parent.parent == cache / "debian-rootfs"
    assert built.image.stat().st_size == 256 << 20
    assert built.packages == (("init", "1.66"), ("systemd", "252.38-1~deb12u1"))
    assert built.mirror == MIRROR and built.build_seconds >= 0
    (call,) = calls(fake_mmdebstrap)
    assert "--variant=minbase" in call and "--architectures=amd64" in call
    assert "--include=init,udev,dbus,systemd-resolved,iproute2,netbase,procps" in call
    # Built in a scratch directory beside the entry, renamed into place when complete.
    assert re.search(rf" bookworm {cache}/debian-rootfs/\.build-[^/ ]+/rootfs\.tar {MIRROR}$",
                     call), call
    assert not (built.image.parent / "rootfs.tar").exists()
    manifest = json.loads((built.image.parent / "rootfs.json").read_text())
    assert manifest["key"] == built.key and manifest["variant"] == "minbase"

    again = build_debian_rootfs(cache, size_mb=256, mirror="http://elsewhere.invalid/debian")
    assert again.from_cache and again.image == built.image and again.key == built.key
    assert len(calls(fake_mmdebstrap)) == 1  # the mirror is no input: no rebuild, no network

    other = build_debian_rootfs(cache, size_mb=256, packages=("init",), mirror=MIRROR)
    assert other.key != built.key and not other.from_cache
    assert len(calls(fake_mmdebstrap)) == 2
    assert not [p for p in (cache / "debian-rootfs").iterdir() if p.name.startswith(".build-")]


def test_a_damaged_cache_entry_is_rebuilt(fake_mmdebstrap: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = build_debian_rootfs(cache, size_mb=256, mirror=MIRROR)
    with open(built.image, "r+b") as handle:
        handle.truncate(1024)
    again = build_debian_rootfs(cache, size_mb=256, mirror=MIRROR)
    assert not again.from_cache and again.image.stat().st_size == 256 << 20
    assert len(calls(fake_mmdebstrap)) == 2


def test_unreachable_mirror_makes_the_rootfs_unavailable(fake_mmdebstrap: Path,
                                                         tmp_path: Path) -> None:
    with pytest.raises(RootfsUnavailable) as caught:
        build_debian_rootfs(tmp_path / "cache", mirror="http://127.0.0.1:9/debian")
    assert caught.value.reason.startswith("The Debian mirror is not reachable "
                                          "(http://127.0.0.1:9/debian/dists/bookworm/InRelease")
    assert "HOOKD_TEST_DEBIAN_MIRROR" in caught.value.reason
    assert calls(fake_mmdebstrap) == []


def test_mmdebstrap_failures_say_why(fake_mmdebstrap: Path, tmp_path: Path) -> None:
    (fake_mmdebstrap / "fail").write_text(
        "E: Failed to fetch http://deb.debian.org/debian/pool/main/s/systemd.deb  "
        "Temporary failure resolving 'deb.debian.org'\n")
    with pytest.raises(RootfsUnavailable, match="could not download from"):
        build_debian_rootfs(tmp_path / "cache", mirror=MIRROR)
    (fake_mmdebstrap / "fail").write_text("E: some package has unmet dependencies\n")
    with pytest.raises(RootfsBuildError, match="unmet dependencies"):
        build_debian_rootfs(tmp_path / "cache", mirror=MIRROR)
    assert not [p for p in (tmp_path / "cache" / "debian-rootfs").iterdir()
                if p.is_dir()]


def test_missing_mmdebstrap_makes_the_rootfs_unavailable(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(RootfsUnavailable, match=r"mmdebstrap is not installed \(Debian package "
                                                r"mmdebstrap\)"):
        build_debian_rootfs(tmp_path / "cache")
