"""Real-world and adversarial image configs, executed under bash, dash and busybox ash.

Each test builds the START_SCRIPT from the image config, runs it in a throwaway root as
one-context would, and compares what the app (the stub) recorded with what ``docker run``
would have given it: argv byte for byte, the whole environment in order, the working
directory, uid/gid/supplementary groups, default signal handling and umask, and that it is
detached (own session, stdin /dev/null, output to the log, no inherited files).
"""

from __future__ import annotations

import os

import pytest

from handlers.start_script import StartScriptOptions, build_start_script, parse_oci_config

from .harness import (
    ALPINE_GROUP,
    ALPINE_PASSWD,
    DEBIAN_GROUP,
    DEBIAN_PASSWD,
    DEBIAN_TOOLS,
    SHELLS,
    Record,
    Root,
    docker_env,
)
from .images import DEFAULT_PATH, IMAGES, Image

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("chroot")]

UNLIMITED = StartScriptOptions(max_script_bytes=None)


def prepare(root: Root, shell: str, image: Image) -> None:
    root.set_shell(shell)
    if image.tools == "debian":
        root.use_tools(*DEBIAN_TOOLS)
    root.accounts(image.passwd, image.group)
    root.place_stub(image.stub)
    for path, content in image.extra.items():
        root.write(path, content)


def run_once(root: Root, script: str) -> Record:
    result = root.run_script(script)
    assert result.returncode == 0, result
    # One-context waits for the script; the app must not make it wait (generous bound).
    assert result.seconds < 5, result
    records = root.wait_records(1)
    assert len(records) == 1, (result, root.read("/var/log/hookd-app.log"))
    return records[0]


def assert_detached(record: Record) -> None:
    assert record.sid == record.pgid, "the app must lead its own process group and session"
    assert record.sid != os.getsid(0), "the app must not share the session of its starter"
    assert record.stdin == "devnull"
    assert record.fd1 == "/var/log/hookd-app.log"
    assert record.fds == [0, 1, 2], "no file of one-context may leak into the app"
    assert record.sigign == [], "docker run starts the app with default signal handling"
    assert record.sigblk == []
    assert record.umask == 0o022


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("image", IMAGES, ids=[image.name for image in IMAGES])
def test_public_image(root: Root, shell: str, image: Image) -> None:
    prepare(root, shell, image)
    script = build_start_script(parse_oci_config(image.config))
    record = run_once(root, script)

    assert record.argv == [arg.encode() for arg in image.argv]
    assert record.env == docker_env(image.env, image.home)
    assert record.cwd == image.workdir.encode()
    assert (record.ruid, record.euid, record.suid) == (image.uid,) * 3
    assert (record.rgid, record.egid, record.sgid) == (image.gid,) * 3
    assert sorted(record.groups) == sorted(image.groups)
    assert_detached(record)
    assert not root.exists("/canary")


@pytest.mark.parametrize("cmd", [["/bin/sh"], ["sh"]], ids=["alpine", "busybox"])
def test_shell_images_run_their_shell(root: Root, cmd: list[str]) -> None:
    """alpine's Cmd is /bin/sh, busybox's is sh: the shell itself, which the stub cannot
    stand in for. With stdin /dev/null it exits 0 at once, as under `docker run`."""
    root.set_shell("busybox")
    root.accounts(ALPINE_PASSWD, ALPINE_GROUP)
    config = {"os": "linux", "config": {"Cmd": cmd, "Env": [DEFAULT_PATH]}}
    root.fake_systemd()
    result = root.run_script(build_start_script(parse_oci_config(config)))
    assert result.returncode == 0, result
    run = root.run_in_root(["/bin/sh", "/run/hookd/hookd-app.launch", "run"])
    assert run.returncode == 0, run
    assert run.stdout == run.stderr == b""


def test_argv0_is_looked_up_in_the_image_path(root: Root) -> None:
    """Like Docker: the first executable match in the image's PATH, argv[0] unchanged; a
    non-executable file earlier in PATH is skipped."""
    root.set_shell("dash")
    root.use_tools(*DEBIAN_TOOLS)
    root.write("/opt/first/myapp", "not executable", 0o644)
    root.place_stub("/opt/second/myapp")
    root.place_stub("/opt/third/myapp")
    config = {"config": {"Cmd": ["myapp", "x"], "Env": ["PATH=/opt/first:/opt/second:/opt/third"]}}
    record = run_once(root, build_start_script(parse_oci_config(config)))
    assert record.argv == [b"myapp", b"x"]
    assert record.exe == "/opt/second/myapp"


# --------------------------------------------------------------------------------------
# Adversarial configs
# --------------------------------------------------------------------------------------

NASTY = [
    "it's",
    '"double"',
    "$(touch /canary)",
    "`touch /canary`",
    "; touch /canary;",
    "&& touch /canary",
    "| touch /canary",
    "$HOME ${PATH} $1 $@ $* $0 $$",
    "line one\nline two\n",
    "\nHOOKD_LAUNCHER_EOF\ntouch /canary\n",
    "*",
    "/*",
    "[a-z]?",
    "~root",
    "\\ \\\\ \\n \\'",
    "%s %d %n %%",
    "-n",
    "-e",
    "--",
    "",
    " leading and trailing spaces ",
    "\ttab\t",
    "héllo wörld ☃ 日本語 🚀",
    "\x01\x02\x1b[31mred\x1b[0m\x7f",
    "!event !! !$",
    "'; touch /canary; echo '",
    '"; touch /canary; echo "',
    "a=b",
]


def adversarial_argv() -> list[str]:
    return ["/usr/local/bin/app", *NASTY]


def adversarial_env() -> list[str]:
    return [
        DEFAULT_PATH,
        *(f"NASTY_{index}={value}" for index, value in enumerate(NASTY)),
        "EMPTY=",
        "EQUALS=a=b=c",
        "lower_case=ok",
        "-DASH=leading dash in the name",
        "WITH SPACE=name with a space",
        "WEIRD$(touch /canary)=name with command substitution",
        "NASTY_0=a later duplicate replaces the first value in place",
    ]


@pytest.mark.parametrize("shell", SHELLS)
def test_adversarial_argv_and_env(root: Root, shell: str) -> None:
    config = {
        "config": {
            "Entrypoint": adversarial_argv()[:1],
            "Cmd": adversarial_argv()[1:],
            "Env": adversarial_env(),
            "WorkingDir": "/srv/$(touch /canary)/a dir;with `stuff`/*",
        }
    }
    root.set_shell(shell)
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub("/usr/local/bin/app")
    record = run_once(root, build_start_script(parse_oci_config(config)))
    assert record.argv == [arg.encode() for arg in adversarial_argv()]
    expected_env = docker_env(adversarial_env()[:-1], "/root")
    index = expected_env.index(f"NASTY_0={NASTY[0]}".encode())
    expected_env[index] = b"NASTY_0=a later duplicate replaces the first value in place"
    assert record.env == expected_env
    assert record.cwd == b"/srv/$(touch /canary)/a dir;with `stuff`/*"
    assert not root.exists("/canary")
    assert_detached(record)


@pytest.mark.parametrize("shell", SHELLS)
def test_100_kb_values(root: Root, shell: str) -> None:
    big = "".join(chr(0x20 + (i * 7919) % 0x5F) for i in range(100_000))  # all of ASCII
    config = {"config": {"Cmd": ["app", big + "'\n"], "Env": [f"BIG={big}"]}}
    root.set_shell(shell)
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub("/usr/bin/app")
    record = run_once(root, build_start_script(parse_oci_config(config), options=UNLIMITED))
    assert record.argv == [b"app", (big + "'\n").encode()]
    assert record.env == docker_env([f"BIG={big}"], "/root")


# --------------------------------------------------------------------------------------
# Entrypoint / Cmd combinations and shell form
# --------------------------------------------------------------------------------------

FORMS = [
    # (Entrypoint, Cmd, where the stub goes, the argv it must see)
    (["/app/entry"], None, "/app/entry", ["/app/entry"]),
    (None, ["/app/cmd", "x"], "/app/cmd", ["/app/cmd", "x"]),
    (["entry", "-a"], ["-b", "c d"], "/usr/bin/entry", ["entry", "-a", "-b", "c d"]),
    ([], ["relative"], "/usr/local/sbin/relative", ["relative"]),
    # Shell form is stored as /bin/sh -c; extra elements become $0 and $1 of the script.
    (
        ["/bin/sh", "-c", 'exec recorder "$0" "$1" "$#"'],
        ["first arg", "second $arg"],
        "/usr/bin/recorder",
        ["recorder", "first arg", "second $arg", "1"],
    ),
    (
        None,
        ["/bin/sh", "-c", "exec recorder 'shell form' \"$HOME\""],
        "/usr/bin/recorder",
        ["recorder", "shell form", "/root"],
    ),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("form", FORMS, ids=["entrypoint-only", "cmd-only", "both",
                                             "empty-entrypoint", "shell-form-args",
                                             "shell-form-cmd"])  # fmt: skip
def test_entrypoint_cmd_forms(
    root: Root,
    shell: str,
    form: tuple[list[str] | None, list[str] | None, str, list[str]],
) -> None:
    entrypoint, cmd, stub, argv = form
    config = {"config": {"Entrypoint": entrypoint, "Cmd": cmd}}
    root.set_shell(shell)
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub(stub)
    record = run_once(root, build_start_script(parse_oci_config(config)))
    assert record.argv == [arg.encode() for arg in argv]
    if argv[0] == "recorder":  # via /bin/sh -c, which adds PWD, SHLVL and the like itself
        assert set(docker_env([], "/root")) <= set(record.env)
    else:
        assert record.env == docker_env([], "/root")


# --------------------------------------------------------------------------------------
# User forms
# --------------------------------------------------------------------------------------

USERS_PASSWD = DEBIAN_PASSWD + (
    "app:x:1001:1001:App:/home/app:/bin/sh\n"
    "web:x:1002:1001::/srv/web:/bin/sh\n"
    "nohome:x:1003:1003:::/bin/sh\n"
    "dup:x:1004:1004::/first:/bin/sh\n"
    "dup:x:1005:1005::/second:/bin/sh\n"
)
USERS_GROUP = DEBIAN_GROUP + (
    "app:x:1001:web\nextra:x:2000:app,web\nmore:x:2001:someone,app\nnohome:x:1003:\n0123:x:3000:\n"
)

USER_FORMS = [
    # (User, uid, gid, groups, HOME)
    ("app", 1001, 1001, [1001, 2000, 2001], "/home/app"),
    ("1001", 1001, 1001, [1001, 2000, 2001], "/home/app"),
    ("01001", 1001, 1001, [1001, 2000, 2001], "/home/app"),
    ("app:extra", 1001, 2000, [2000], "/home/app"),
    ("app:2001", 1001, 2001, [2001], "/home/app"),
    ("1001:2000", 1001, 2000, [2000], "/home/app"),
    ("1001:extra", 1001, 2000, [2000], "/home/app"),
    ("web", 1002, 1001, [1001, 2000], "/srv/web"),
    # Numeric ids without an entry are used as they are, with group 0 and HOME /.
    ("4242", 4242, 0, [0], "/"),
    ("4242:4343", 4242, 4343, [4343], "/"),
    ("app:4343", 1001, 4343, [4343], "/home/app"),
    # An empty home field gives HOME /; the first of two entries with one name wins.
    ("nohome", 1003, 1003, [1003], "/"),
    ("dup", 1004, 1004, [1004], "/first"),
    # Numeric group "0123" is gid 123, not the group *named* "0123".
    ("app:0123", 1001, 123, [123], "/home/app"),
    ("root", 0, 0, [0], "/root"),
    ("0:0", 0, 0, [0], "/root"),
    ("", 0, 0, [0], "/root"),
]


@pytest.mark.parametrize("tools", ["setpriv", "chroot", "busybox"])
@pytest.mark.parametrize("form", USER_FORMS, ids=[form[0] or "empty" for form in USER_FORMS])
def test_user_forms(root: Root, tools: str, form: tuple[str, int, int, list[int], str]) -> None:
    user, uid, gid, groups, home = form
    root.set_shell("dash")
    root.use_tools("setsid", *([tools] if tools != "busybox" else []))
    root.accounts(USERS_PASSWD, USERS_GROUP)
    root.place_stub("/usr/bin/app")
    config = {"config": {"Cmd": ["app"], "User": user}}
    script = build_start_script(parse_oci_config(config))
    result = root.run_script(script)
    if tools == "busybox" and not busybox_su_can(user):
        # busybox su sets initgroups(name, passwd gid): not exactly these ids. Refuse.
        assert result.returncode == 78, result
        assert "Refusing to run the app as root" in result.stderr
        assert root.wait_records(1, timeout=0.3) == []
        return
    assert result.returncode == 0, result
    [record] = root.wait_records(1)
    assert (record.ruid, record.euid, record.suid) == (uid,) * 3
    assert (record.rgid, record.egid, record.sgid) == (gid,) * 3
    assert sorted(record.groups) == sorted(groups)
    assert record.env == docker_env([], home)
    assert f"via {'su' if tools == 'busybox' else tools}" in result.stderr


def busybox_su_can(user: str) -> bool:
    """The forms for which `busybox su NAME` yields exactly Docker's identity: the user has
    a passwd entry and the group, if given, is its primary group with no other memberships."""
    return user in {"app", "1001", "01001", "web", "nohome", "dup", "root", "0:0", ""}


def test_missing_named_user_is_refused(root: Root) -> None:
    root.set_shell("bash")
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub("/usr/bin/app")
    config = {"config": {"Cmd": ["app"], "User": "ghost"}}
    result = root.run_script(build_start_script(parse_oci_config(config)))
    assert result.returncode == 78
    assert "user 'ghost' (image User 'ghost') is not in this guest's /etc/passwd" in result.stderr
    assert root.wait_records(1, timeout=0.3) == []
    assert root.processes() == []


def test_missing_named_group_is_refused(root: Root) -> None:
    root.set_shell("busybox")
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub("/usr/bin/app")
    config = {"config": {"Cmd": ["app"], "User": "nobody:ghosts"}}
    result = root.run_script(build_start_script(parse_oci_config(config)))
    assert result.returncode == 78
    assert "group 'ghosts'" in result.stderr
    assert root.wait_records(1, timeout=0.3) == []


def test_numeric_name_collision_never_gives_root(root: Root) -> None:
    """An image whose passwd has a user *named* "1234" with uid 0: util-linux setpriv
    would resolve --reuid=1234 to root, so the launcher must not use it. GNU chroot with
    '+' ids is exact; without it (busybox only) the launcher must refuse."""
    passwd = DEBIAN_PASSWD + "1234:x:0:0:evil:/root:/bin/sh\n"
    group = DEBIAN_GROUP + "77:x:0:\n"
    root.set_shell("dash")
    root.accounts(passwd, group)
    root.place_stub("/usr/bin/app")
    config = {"config": {"Cmd": ["app"], "User": "1234:77"}}
    script = build_start_script(parse_oci_config(config))

    root.use_tools("setpriv", "setsid")  # setpriv present, GNU chroot absent
    result = root.run_script(script)
    assert result.returncode == 78, result
    assert root.wait_records(1, timeout=0.3) == []

    root.use_tools("chroot")
    result = root.run_script(script)
    assert result.returncode == 0, result
    [record] = root.wait_records(1)
    assert (record.ruid, record.rgid, record.groups) == (1234, 77, [77])
    assert "via chroot" in result.stderr


def test_workdir_is_created_root_owned(root: Root) -> None:
    root.set_shell("dash")
    root.use_tools("setpriv", "setsid")
    root.accounts(USERS_PASSWD, USERS_GROUP)
    root.place_stub("/usr/bin/app")
    config = {"config": {"Cmd": ["app"], "User": "app", "WorkingDir": "/opt/new/deep dir"}}
    record = run_once(root, build_start_script(parse_oci_config(config)))
    assert record.cwd == b"/opt/new/deep dir"
    made = os.stat(root.path / "opt/new/deep dir")
    assert (made.st_uid, made.st_gid, made.st_mode & 0o777) == (0, 0, 0o755)


def test_workdir_that_is_a_file_is_refused(root: Root) -> None:
    root.set_shell("dash")
    root.use_tools("setpriv", "setsid")
    root.place_stub("/usr/bin/app")
    root.write("/srv", "not a directory")
    config = {"config": {"Cmd": ["app"], "WorkingDir": "/srv"}}
    root.fake_systemd()
    assert root.run_script(build_start_script(parse_oci_config(config))).returncode == 0
    run = root.run_in_root(["/bin/sh", "/run/hookd/hookd-app.launch", "run"])
    assert run.returncode == 78
    assert b"cannot create or enter WorkingDir '/srv'" in run.stderr
    assert root.records() == []
