"""Throwaway root filesystems in which generated START_SCRIPTs are really executed.

A *base root* is built once per test session from busybox-static (every applet a symlink to
``/bin/busybox``), plus copies of bash, dash, util-linux ``setpriv`` and ``setsid`` and GNU
``chroot`` with the shared libraries ``ldd`` names (kept under ``/opt`` until a test installs
them), a ``/dev/null`` node, and a statically linked recorder program (``stub.c``) that stands
in for the image's app. Each test gets its own copy made of hard links (``cp -al``, fast and
cheap), with the host's ``/proc`` bind-mounted so pid liveness checks work, and runs the script
there with ``chroot`` the way one-context does: written to a file, executed directly (the
shebang picks the root's ``/bin/sh``, which the test points at bash, dash or busybox ash),
from the context mount directory, with one-context's kind of environment.

Needs root (chroot, mknod, mount). Without it, or without busybox-static, gcc or the host
tools, the tests are skipped with the reason, except with ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

SHELLS = ("bash", "dash", "busybox")
# What a Debian/Ubuntu/RHEL-family guest has over busybox: util-linux and GNU coreutils.
DEBIAN_TOOLS = ("setpriv", "setsid", "chroot", "env")
STUB_SOURCE = Path(__file__).with_name("stub.c")
HOSTNAME = os.uname().nodename
CHROOT = "/usr/sbin/chroot"

# What the tests need from the host, and the Debian package that provides it.
HOST_PROGRAMS = {
    "/bin/busybox": "busybox-static",
    "/bin/bash": "bash",
    "/bin/dash": "dash",
    "/usr/bin/setpriv": "util-linux",
    "/usr/bin/setsid": "util-linux",
    "/usr/sbin/chroot": "coreutils",
    "/usr/bin/env": "coreutils",
    "/usr/bin/base64": "coreutils",
    "/bin/gzip": "gzip",
    "/usr/bin/cmp": "diffutils",
    "/usr/bin/ldd": "libc-bin",
    "/bin/mount": "mount",
}

# Debian-like and Alpine-like account files (trimmed to what the tests use).
DEBIAN_PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
DEBIAN_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
www-data:x:33:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""
ALPINE_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
"""
ALPINE_GROUP = """\
root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin,adm
adm:x:4:root,adm,daemon
tty:x:5:
disk:x:6:root,adm
wheel:x:10:root
nogroup:x:65533:
nobody:x:65534:
"""


def in_ci() -> bool:
    """CI runs ``.ci/run`` with ``CI=true``."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip a required test that cannot run here; in CI (``CI=true``) fail it instead."""
    if in_ci():
        pytest.fail(f"required test cannot run in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Record:
    """What the stub saw about itself (see stub.c)."""

    pid: int
    argv: list[bytes]
    env: list[bytes]
    cwd: bytes
    ruid: int
    euid: int
    suid: int
    rgid: int
    egid: int
    sgid: int
    ppid: int
    pgid: int
    sid: int
    umask: int
    groups: list[int]
    sigign: list[int]
    sigblk: list[int]
    stdin: str
    fds: list[int]
    fd1: str
    exe: str

    @property
    def env_names(self) -> list[bytes]:
        return [entry.split(b"=", 1)[0] for entry in self.env]


@dataclass(frozen=True)
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _split_nul(data: bytes) -> list[bytes]:
    assert data == b"" or data.endswith(b"\0"), data[-50:]
    return data.split(b"\0")[:-1]


def _ints(text: str) -> list[int]:
    return [int(word) for word in text.split()]


def read_record(path: Path) -> Record:
    ids = (path / "ids").read_text().split()
    return Record(
        pid=int(path.name),
        argv=_split_nul((path / "argv").read_bytes()),
        env=_split_nul((path / "env").read_bytes()),
        cwd=(path / "cwd").read_bytes(),
        ruid=int(ids[0]),
        euid=int(ids[1]),
        suid=int(ids[2]),
        rgid=int(ids[3]),
        egid=int(ids[4]),
        sgid=int(ids[5]),
        ppid=int(ids[7]),
        pgid=int(ids[8]),
        sid=int(ids[9]),
        umask=int(ids[10], 8),
        groups=_ints((path / "groups").read_text()),
        sigign=_ints((path / "sigign").read_text()),
        sigblk=_ints((path / "sigblk").read_text()),
        stdin=(path / "stdin").read_text(),
        fds=_ints((path / "fds").read_text()),
        fd1=(path / "fd1").read_text(),
        exe=(path / "exe").read_text(),
    )


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def _libraries(binary: str) -> list[str]:
    out = _run(["ldd", binary]).stdout.decode()
    return [word for word in out.split() if word.startswith("/")]


def build_base_root(dest: Path) -> None:
    """Build the shared, read-only-by-convention base root at ``dest``."""
    if os.geteuid() != 0:
        unavailable("executing START_SCRIPTs in a chroot needs root")
    for program, package in HOST_PROGRAMS.items():
        if not os.access(program, os.X_OK):
            unavailable(f"{program} is missing (Debian package {package})")
    gcc = shutil.which("gcc")
    static_libc = list(Path("/usr/lib").glob("*/libc.a")) + list(Path("/usr/lib").glob("libc.a"))
    if gcc is None or not static_libc:
        unavailable("gcc and a static libc are needed for the stub (Debian: gcc, libc6-dev)")

    for sub in (
        "bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin", "etc",
        "dev", "proc", "run", "var/log", "var/lib/one-context/tmp", "mnt/context", "root",
        "opt/shells", "opt/gnu",
    ):  # fmt: skip
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for sticky in ("tmp", "hookd-test/rec"):
        (dest / sticky).mkdir(parents=True, exist_ok=True)
        (dest / sticky).chmod(0o1777)
    (dest / "hookd-test").chmod(0o755)

    shutil.copy2("/bin/busybox", dest / "bin/busybox")
    applets = _run(["/bin/busybox", "--list-full"]).stdout.decode().split()
    for applet in applets:
        link = dest / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")

    binaries = {
        "/bin/bash": "opt/shells/bash",
        "/bin/dash": "opt/shells/dash",
        "/usr/bin/setpriv": "opt/gnu/setpriv",
        "/usr/bin/setsid": "opt/gnu/setsid",
        "/usr/sbin/chroot": "opt/gnu/chroot",
        "/usr/bin/env": "opt/gnu/env",
        "/usr/bin/base64": "opt/gnu/base64",
        "/bin/gzip": "opt/gnu/gzip",
        "/usr/bin/cmp": "opt/gnu/cmp",
    }
    for source, target in binaries.items():
        shutil.copy2(source, dest / target)
        for library in _libraries(source):
            copy = dest / library.lstrip("/")
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(library, copy)

    _run([gcc, "-static", "-O2", "-Wall", "-o", str(dest / "opt/stub"), str(STUB_SOURCE)])
    os.mknod(dest / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    (dest / "dev/null").chmod(0o666)
    (dest / "etc/passwd").write_text(DEBIAN_PASSWD)
    (dest / "etc/group").write_text(DEBIAN_GROUP)


class Root:
    """One test's root: a hard-linked copy of the base with /proc bind-mounted."""

    def __init__(self, base: Path, path: Path) -> None:
        self.path = path
        _run(["cp", "-a", "-l", str(base), str(path)])
        _run(["mount", "--bind", "/proc", str(path / "proc")])
        self.rec = path / "hookd-test/rec"

    # -- setup ------------------------------------------------------------------------

    def _replace(self, relative: str) -> Path:
        target = self.path / relative.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()  # never write through a hard link shared with the base
        return target

    def write(self, relative: str, content: str | bytes, mode: int = 0o644) -> Path:
        target = self._replace(relative)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode)
        return target

    def set_shell(self, shell: str) -> None:
        """Point /bin/sh at bash, dash or busybox ash."""
        target = {"bash": "/opt/shells/bash", "dash": "/opt/shells/dash", "busybox": "busybox"}
        self._replace("/bin/sh").symlink_to(target[shell])

    def use_tools(self, *tools: str) -> None:
        """Install util-linux setpriv / setsid, GNU chroot, env, base64, gzip or cmp over the
        busybox applets."""
        places = {"setpriv": "/usr/bin/setpriv", "setsid": "/usr/bin/setsid",
                  "chroot": "/usr/sbin/chroot", "env": "/usr/bin/env",
                  "base64": "/usr/bin/base64", "gzip": "/bin/gzip",
                  "cmp": "/usr/bin/cmp"}  # fmt: skip
        for tool in tools:
            os.link(self.path / "opt/gnu" / tool, self._replace(places[tool]))

    def accounts(self, passwd: str, group: str) -> None:
        self.write("/etc/passwd", passwd)
        self.write("/etc/group", group)

    def place_stub(self, relative: str) -> None:
        os.link(self.path / "opt/stub", self._replace(relative))

    def hide_busybox(self) -> None:
        """Keep the applets working but make `busybox` itself unfindable in PATH (a guest
        without busybox su and start-stop-daemon): the applet links point elsewhere."""
        hidden = self.path / "opt/bb/busybox"
        hidden.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.path / "bin/busybox", hidden)
        for directory in ("bin", "sbin", "usr/bin", "usr/sbin"):
            for link in (self.path / directory).iterdir():
                if link.is_symlink() and os.readlink(link) == "/bin/busybox":
                    link.unlink()
                    link.symlink_to("/opt/bb/busybox")
        (self.path / "bin/busybox").unlink()

    def linger(self, on: bool = True) -> None:
        marker = self.path / "hookd-test/linger"
        if on:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def fake_systemd(self) -> None:
        (self.path / "run/systemd/system").mkdir(parents=True, exist_ok=True)
        self.write(
            "/usr/bin/systemctl",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>/hookd-test/systemctl.log\nexit 0\n",
            0o755,
        )

    def fake_openrc(self) -> None:
        (self.path / "run/openrc").mkdir(parents=True, exist_ok=True)
        (self.path / "etc/init.d").mkdir(parents=True, exist_ok=True)
        self.write(
            "/sbin/rc-service",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>/hookd-test/rc-service.log\nexit 0\n",
            0o755,
        )
        self.write("/sbin/supervise-daemon", "#!/bin/sh\nexit 0\n", 0o755)
        self.write("/sbin/openrc-run", "#!/bin/sh\nexit 0\n", 0o755)

    # -- running ----------------------------------------------------------------------

    def context_environment(self, script: str) -> dict[str, str]:
        """An environment like the one one-contextd gives START_SCRIPT: LANG/LC_ALL=C and
        every context variable exported, plus a marker that must never reach the app."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C",
            "LC_ALL": "C",
            "MOUNT_DIR": "/mnt/context",
            "ETH0_IP": "10.0.0.2",
            "SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHookdTestKey test@hookd",
            "HOOKD_TEST_LEAK": "this must not reach the app",
        }
        encoded = base64.b64encode(script.encode()).decode()
        if len(encoded) < 120_000:  # as large as one-context itself could export
            env["START_SCRIPT_BASE64"] = encoded
        return env

    def run_script(
        self, script: str, *, env: Mapping[str, str] | None = None, timeout: float = 30
    ) -> ScriptResult:
        """Run ``script`` as one-context does; returns when the script itself has exited.

        stdout/stderr are pipes: a daemon that kept them open would make this hang until
        ``timeout`` (one-context itself uses a file, but nothing should hold it either).
        fd 7 is left open, as a stand-in for files one-context does not close.
        """
        script_relative = "var/lib/one-context/tmp/one-context.test/one-start-script"
        script_file = self.path / script_relative
        script_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        script_file.write_text(script)
        script_file.chmod(0o700)
        wrapper = 'cd /mnt/context && exec 7>>/tmp/one-context-open-file && exec "$0"'
        started = time.monotonic()
        proc = subprocess.run(
            [CHROOT, str(self.path), "/bin/sh", "-c", wrapper, f"/{script_relative}"],
            env=dict(env if env is not None else self.context_environment(script)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return ScriptResult(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            time.monotonic() - started,
        )

    def run_in_root(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: Path | None = None,
        session: bool = False,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` chrooted into this root with stdin /dev/null, cwd /, ``env``;
        output appended to ``stdout`` (a host path) when given."""
        prefix = [CHROOT, str(self.path)]
        out = open(stdout, "ab") if stdout is not None else None  # noqa: SIM115
        try:
            return subprocess.run(
                prefix + argv,
                env=dict(env or {}),
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT if out is not None else subprocess.PIPE,
                start_new_session=session,
                timeout=timeout,
                check=False,
            )
        finally:
            if out is not None:
                out.close()

    # -- observing --------------------------------------------------------------------

    def records(self) -> list[Record]:
        found = [
            read_record(entry)
            for entry in self.rec.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        ]
        return sorted(found, key=lambda record: record.pid)

    def wait_records(self, count: int, timeout: float = 5.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.records()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def signal_of(self, pid: int, timeout: float = 15.0) -> int | None:
        path = self.rec / f"{pid}.signal"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        time.sleep(0.01)
        return int(path.read_text())

    def processes(self) -> list[int]:
        """Live (non-zombie) processes whose root directory is this root."""
        mine = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "root") != str(self.path):
                    continue
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                mine.append(int(entry.name))
        return sorted(mine)

    def alive(self, pid: int) -> bool:
        return pid in self.processes()

    def read(self, relative: str) -> str:
        return (self.path / relative.lstrip("/")).read_text(errors="replace")

    def exists(self, relative: str) -> bool:
        return (self.path / relative.lstrip("/")).exists()

    def reset(self) -> None:
        """Between runs in one test: stop every process, forget records and runtime state."""
        self.kill_all()
        for entry in self.rec.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for relative in ("run/hookd", "var/log"):
            shutil.rmtree(self.path / relative, ignore_errors=True)
        (self.path / "var/log").mkdir()
        (self.path / "canary").unlink(missing_ok=True)

    def kill_all(self) -> None:
        for _ in range(50):
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def close(self) -> None:
        self.kill_all()
        subprocess.run(["umount", "-l", str(self.path / "proc")], check=False)
        shutil.rmtree(self.path, ignore_errors=True)


def docker_env(image_env: Iterable[str], home: str, hostname: str = HOSTNAME) -> list[bytes]:
    """The environment ``docker run`` builds (moby's ReplaceOrAppendEnvValues over PATH and
    HOSTNAME, then runc adds HOME when absent), written independently of the generator."""
    env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"HOSTNAME={hostname}",
    ]
    for entry in image_env:
        name = entry.split("=", 1)[0]
        for index, existing in enumerate(env):
            if existing.split("=", 1)[0] == name:
                env[index] = entry
                break
        else:
            env.append(entry)
    if not any(entry.startswith("HOME=") for entry in env):
        env.append(f"HOME={home}")
    return [entry.encode() for entry in env]
