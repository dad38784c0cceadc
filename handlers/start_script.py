"""START_SCRIPT generator: run a Docker image's Entrypoint + Cmd inside an OpenNebula VM.

OpenNebula's Docker import drops the image's process definition (Entrypoint, Cmd, Env,
WorkingDir, User, StopSignal). hookd puts it back as a contextualization START_SCRIPT
(delivered base64-encoded as ``CONTEXT/START_SCRIPT_BASE64``) that starts the app the way
``docker run`` would. Everything here is a pure function of its arguments: no I/O, no clock,
no logging, so the same input always yields byte-identical text (hookd hashes it).

Public API:

* :func:`parse_oci_config` / :func:`load_oci_config` — image config JSON → :class:`OciProcess`.
* :func:`build_start_script` — :class:`OciProcess` → START_SCRIPT text.
* :func:`build_fallback_script` — START_SCRIPT that starts OpenNebula's ``/one_entrypoint.sh``.
* :func:`compose_with_user_script` — run a VM owner's START_SCRIPT and hookd's, isolated.

What the generated START_SCRIPT does in the guest (one-context runs it synchronously, as
root, on every boot and every reconfigure): it installs one root-only file,
``/run/hookd/<name>.launch`` (the *launcher*, shown inline in the script so operators can
review it), then runs it. The launcher resolves the image's User against the guest's own
/etc/passwd and /etc/group (plain shell, as runc does for ``docker run``) and starts the
app detached from one-context: as a systemd service (unit in /run/systemd/system), as an
OpenRC ``supervise-daemon`` service, or, with neither, as a detached session leader with a
pidfile. In every mode the app is finally exec'ed by ``env -i`` with exactly the image's
environment, after the privileges were dropped with the first exact tool the guest has.

Size limit: one-context exports every context variable, START_SCRIPT_BASE64 included, into
the environment of each context script it runs. Linux refuses an exec whose environment
holds a string over 128 KiB (MAX_ARG_STRLEN), which would break contextualization of the
whole VM, so by default a script whose base64 form would exceed that is refused
(:data:`MAX_START_SCRIPT_BYTES`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from hookd.errors import PermanentError

__all__ = [
    "DEFAULT_PATH",
    "MAX_ARGV_ITEMS",
    "MAX_ARG_BYTES",
    "MAX_CONFIG_DOCUMENT_BYTES",
    "MAX_ENV_ENTRIES",
    "MAX_START_SCRIPT_BYTES",
    "MAX_TOTAL_EXEC_BYTES",
    "OciProcess",
    "StartScriptError",
    "StartScriptOptions",
    "build_fallback_script",
    "build_start_script",
    "compose_with_user_script",
    "load_oci_config",
    "parse_oci_config",
]

#: PATH that ``docker run`` gives a process whose image does not set one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Largest JSON document :func:`load_oci_config` reads (image configs with a long history
#: are a few hundred KiB at most).
MAX_CONFIG_DOCUMENT_BYTES = 4 * 1024 * 1024
#: Linux's MAX_ARG_STRLEN is 128 KiB including the terminating NUL: a longer argv element
#: or ``NAME=VALUE`` string cannot be exec'ed at all, by Docker or by us.
MAX_ARG_BYTES = 128 * 1024 - 1
#: At most this many argv elements (Entrypoint + Cmd) and Env entries.
MAX_ARGV_ITEMS = 4096
MAX_ENV_ENTRIES = 4096
#: argv and Env together, in bytes with their NULs: half the usual 2 MiB ARG_MAX, so the
#: privilege-drop tool and env(1) still fit in one exec.
MAX_TOTAL_EXEC_BYTES = 1024 * 1024
#: WorkingDir: PATH_MAX - 1. User: far above any real user:group. StopSignal: "SIGRTMAX-14".
MAX_WORKDIR_BYTES = 4095
MAX_USER_BYTES = 256
MAX_SIGNAL_CHARS = 32
#: Largest START_SCRIPT whose base64 form, as ``START_SCRIPT_BASE64=...`` plus NUL, stays
#: within MAX_ARG_STRLEN (131072): 4 * ceil(n / 3) <= 131072 - 1 - 20.
MAX_START_SCRIPT_BYTES = 98286

# runc (and so Docker) accepts uids and gids in 0 .. 2**31 - 1.
_MAX_ID = 2**31 - 1
_RUN_DIR = "/run/hookd"
_EXIT_REFUSED = 78  # EX_CONFIG: the launcher refused to start; systemd must not retry.
_FALLBACK_ENTRYPOINT = "/one_entrypoint.sh"

# Docker's signal table for Linux (moby/sys signal.SignalMap), names without "SIG".
# Numbers are the generic Linux ones, shared by x86_64, aarch64, ppc64le and s390x.
_SIGNAL_NUMBERS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20,
    "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27,
    "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31, "UNUSED": 31,
    "RTMIN": 34, "RTMAX": 64,
    **{f"RTMIN+{i}": 34 + i for i in range(1, 16)},
    **{f"RTMAX-{i}": 64 - i for i in range(1, 15)},
}  # fmt: skip
# One canonical name per number (the first one above: ABRT, CHLD, IO, SYS).
_CANONICAL_SIGNAL: dict[int, str] = {}
for _name, _number in _SIGNAL_NUMBERS.items():
    _CANONICAL_SIGNAL.setdefault(_number, _name)
# Names OpenRC's parse_signal() knows; other signals go to its schedule as "-NUMBER".
_OPENRC_SIGNALS = frozenset(
    {
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    }
)  # fmt: skip

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LOG_RE = re.compile(r"/[A-Za-z0-9_.@+/-]{1,254}")
_ID_RE = re.compile(r"[+-]?[0-9]+")
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "pdksh", "zsh", "yash"})


class StartScriptError(PermanentError):
    """The image config or the options cannot be turned into a safe START_SCRIPT.

    ``reason`` is one sentence naming the offending field. Permanent: retrying with the same
    image config gives the same answer.
    """


@dataclass(frozen=True)
class OciProcess:
    """The process ``docker run IMAGE`` starts, with Docker's defaults applied.

    ``argv`` is Entrypoint + Cmd; ``env`` the image Env in order, names unique (a later
    duplicate already replaced the earlier value in place); ``workdir`` an absolute path;
    ``user`` the image's User string as written (``""`` = root); ``stop_signal`` a canonical
    name such as ``SIGTERM`` or ``SIGRTMIN+3``. Constructing one validates all of it, so an
    instance can always be rendered.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    user: str = ""
    stop_signal: str = "SIGTERM"

    def __post_init__(self) -> None:
        if not isinstance(self.argv, tuple) or not all(isinstance(a, str) for a in self.argv):
            raise StartScriptError("argv must be a tuple of strings.")
        if not self.argv:
            raise StartScriptError(
                "The image has neither Entrypoint nor Cmd, so there is nothing to run "
                "(docker run refuses such an image too)."
            )
        if len(self.argv) > MAX_ARGV_ITEMS:
            raise StartScriptError(
                f"Entrypoint + Cmd has {len(self.argv)} elements, more than {MAX_ARGV_ITEMS}."
            )
        for index, arg in enumerate(self.argv):
            _check_text(arg, f"argv[{index}]", MAX_ARG_BYTES)
        if self.argv[0] == "":
            raise StartScriptError("argv[0] (the program to run) is empty.")
        if "=" in self.argv[0]:
            # env(1) execs the app and would take "a=b" for one more variable assignment.
            raise StartScriptError(
                f"argv[0] {self.argv[0][:80]!r} contains '=', which env(1) would read as "
                "a variable assignment instead of the program to run."
            )
        if not isinstance(self.env, tuple):
            raise StartScriptError("env must be a tuple of (name, value) pairs.")
        if len(self.env) > MAX_ENV_ENTRIES:
            raise StartScriptError(f"Env has {len(self.env)} entries, more than {MAX_ENV_ENTRIES}.")
        seen: set[str] = set()
        total = sum(len(a.encode()) + 1 for a in self.argv)
        for pair in self.env:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise StartScriptError("env must be a tuple of (name, value) string pairs.")
            name, value = pair
            _check_env_name(name)
            if name in seen:
                raise StartScriptError(f"Env variable {name[:80]!r} appears twice.")
            seen.add(name)
            _check_text(f"{name}={value}", f"Env entry {name[:80]!r}", MAX_ARG_BYTES)
            total += len(name.encode()) + len(value.encode()) + 2
        if total > MAX_TOTAL_EXEC_BYTES:
            raise StartScriptError(
                f"Entrypoint, Cmd and Env add up to {total} bytes, more than "
                f"{MAX_TOTAL_EXEC_BYTES}."
            )
        if not isinstance(self.workdir, str):
            raise StartScriptError("workdir must be a string.")
        _check_text(self.workdir, "WorkingDir", MAX_WORKDIR_BYTES)
        if not self.workdir.startswith("/"):
            raise StartScriptError(
                f"WorkingDir {self.workdir[:80]!r} is not an absolute path (Docker refuses it)."
            )
        _parse_user(self.user)
        if not isinstance(self.stop_signal, str) or not (
            self.stop_signal.startswith("SIG") and self.stop_signal[3:] in _SIGNAL_NUMBERS
        ):
            raise StartScriptError(
                f"stop_signal {self.stop_signal!r} is not a signal name such as 'SIGTERM'."
            )


@dataclass(frozen=True)
class StartScriptOptions:
    """How the app is installed in the guest.

    ``name``: systemd unit / OpenRC service / file name stem (letters, digits, ``_.-``, at
    most 63 characters). ``log_file``: where stdout and stderr go without systemd (an
    absolute path of plain characters). ``context_env``: overlay the VM's one-context
    variables (``/var/run/one-context/one_env``, sourced as OpenNebula's
    ``/one_entrypoint.sh`` did) on top of the image Env; off by default so the app sees
    exactly what ``docker run`` gives it. ``max_script_bytes``: refuse a larger script
    (``None``: no limit; see :data:`MAX_START_SCRIPT_BYTES`).
    """

    name: str = "hookd-app"
    log_file: str = "/var/log/hookd-app.log"
    context_env: bool = False
    max_script_bytes: int | None = MAX_START_SCRIPT_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise StartScriptError(
                f"Service name {str(self.name)[:80]!r} must be 1-63 letters, digits, '_', "
                "'.' or '-', starting with a letter or digit."
            )
        if (
            not isinstance(self.log_file, str)
            or not _LOG_RE.fullmatch(self.log_file)
            or self.log_file.endswith("/")
            or "/../" in f"{self.log_file}/"
            or "//" in self.log_file
        ):
            raise StartScriptError(
                f"Log file {str(self.log_file)[:80]!r} must be an absolute path of letters, "
                "digits and '_.@+-/', without '..', '//' or a trailing '/'."
            )
        if not isinstance(self.context_env, bool):
            raise StartScriptError("context_env must be a boolean.")
        if self.max_script_bytes is not None and (
            not isinstance(self.max_script_bytes, int) or self.max_script_bytes <= 0
        ):
            raise StartScriptError("max_script_bytes must be a positive integer or None.")


# --------------------------------------------------------------------------------------
# Parsing the image config
# --------------------------------------------------------------------------------------


def load_oci_config(data: bytes | str) -> OciProcess:
    """Parse raw image-config JSON (at most :data:`MAX_CONFIG_DOCUMENT_BYTES`).

    Raises :class:`StartScriptError` for an oversized, non-UTF-8, malformed or too deeply
    nested document, and for everything :func:`parse_oci_config` rejects.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_DOCUMENT_BYTES:
        raise StartScriptError(
            f"The image config is {size} bytes, more than {MAX_CONFIG_DOCUMENT_BYTES}."
        )
    if isinstance(data, bytes):
        try:
            # Strictly UTF-8 (RFC 8259); json.loads would also guess UTF-16 and UTF-32.
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise StartScriptError("The image config is not UTF-8 text.") from None
    try:
        doc = json.loads(data)
    except RecursionError:
        raise StartScriptError("The image config JSON is nested too deeply.") from None
    except ValueError as exc:  # json.JSONDecodeError, huge integers
        raise StartScriptError(f"The image config is not valid JSON: {exc}.") from None
    return parse_oci_config(doc)


def parse_oci_config(doc: object) -> OciProcess:
    """Turn a parsed image config into the :class:`OciProcess` ``docker run`` would start.

    ``doc`` is the JSON of an image config blob (``{"config": {...}, "os": ...}``), Docker
    Engine's casing (``{"Config": {...}, "Os": ...}``), or the one-element list printed by
    ``docker image inspect``. Fields read: ``Entrypoint``, ``Cmd`` (lists of strings or
    null), ``Env`` (list of ``NAME=VALUE`` or null), ``WorkingDir``, ``User``,
    ``StopSignal`` (string or null); everything else is ignored.

    Docker semantics: argv = Entrypoint + Cmd (shell form is already stored as
    ``["/bin/sh", "-c", ...]``); Env split at the first ``=``, order kept, a later duplicate
    replaces the earlier value in place; WorkingDir defaults to ``/``; StopSignal defaults
    to SIGTERM and may be a name (any case, with or without ``SIG``) or a number, and is
    returned as a canonical name.

    Caps (anything larger is refused, never truncated): each argv element and each Env
    entry 131071 bytes (Linux MAX_ARG_STRLEN); 4096 argv elements; 4096 Env entries; argv
    and Env together 1 MiB; WorkingDir 4095 bytes; User 256 bytes; StopSignal 32
    characters. The document as a whole is capped by :func:`load_oci_config` (4 MiB).

    Raises :class:`StartScriptError` with a one-sentence reason for wrong JSON types, nulls
    where a string is needed, non-string list items, NUL bytes or unpaired surrogates,
    empty argv, Env entries without ``=`` or with an empty name, a relative WorkingDir, a
    malformed User, an unknown StopSignal, a non-Linux image, or oversized fields. Input is
    never "fixed up".
    """
    if isinstance(doc, list):
        if len(doc) != 1:
            raise StartScriptError(
                f"Expected one image config, got a JSON list of {len(doc)} items."
            )
        doc = doc[0]
    if not isinstance(doc, dict):
        raise StartScriptError(f"The image config must be a JSON object, not {_json_type(doc)}.")
    if "config" in doc and "Config" in doc:
        raise StartScriptError("The image config has both 'config' and 'Config'.")
    for key in ("os", "Os"):
        if key in doc and doc[key] is not None:
            if not isinstance(doc[key], str):
                raise StartScriptError(f"'{key}' must be a string, not {_json_type(doc[key])}.")
            if doc[key] != "linux":
                raise StartScriptError(f"The image is built for {doc[key][:40]!r}, not linux.")
    config = doc.get("config", doc.get("Config"))
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise StartScriptError(f"'config' must be a JSON object, not {_json_type(config)}.")

    argv = _string_list(config, "Entrypoint") + _string_list(config, "Cmd")
    if len(argv) > MAX_ARGV_ITEMS:
        raise StartScriptError(
            f"Entrypoint + Cmd has {len(argv)} elements, more than {MAX_ARGV_ITEMS}."
        )
    env = _parse_env(config.get("Env"))
    workdir = _optional_string(config, "WorkingDir", MAX_WORKDIR_BYTES) or "/"
    user = _optional_string(config, "User", MAX_USER_BYTES)
    stop_signal = _parse_stop_signal(config.get("StopSignal"))
    return OciProcess(
        argv=tuple(argv), env=env, workdir=workdir, user=user, stop_signal=stop_signal
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_text(text: str, what: str, max_bytes: int) -> None:
    if "\x00" in text:
        raise StartScriptError(f"{what} contains a NUL byte.")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise StartScriptError(f"{what} is not valid Unicode (unpaired surrogate).") from None
    if size > max_bytes:
        raise StartScriptError(f"{what} is {size} bytes, more than {max_bytes}.")


def _check_env_name(name: str) -> None:
    if name == "":
        raise StartScriptError("An Env entry has an empty variable name.")
    if "=" in name:
        raise StartScriptError(f"Env variable name {name[:80]!r} contains '='.")
    _check_text(name, f"Env variable name {name[:80]!r}", MAX_ARG_BYTES)


def _string_list(config: dict[str, object], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise StartScriptError(f"'{key}' must be a list of strings, not {_json_type(value)}.")
    if len(value) > MAX_ARGV_ITEMS:
        raise StartScriptError(f"'{key}' has {len(value)} elements, more than {MAX_ARGV_ITEMS}.")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise StartScriptError(f"'{key}'[{index}] must be a string, not {_json_type(item)}.")
        _check_text(item, f"'{key}'[{index}]", MAX_ARG_BYTES)
    return list(value)  # every item was checked to be a str above


def _optional_string(config: dict[str, object], key: str, max_bytes: int) -> str:
    value = config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StartScriptError(f"'{key}' must be a string, not {_json_type(value)}.")
    _check_text(value, f"'{key}'", max_bytes)
    return value


def _parse_env(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise StartScriptError(f"'Env' must be a list of strings, not {_json_type(value)}.")
    if len(value) > MAX_ENV_ENTRIES:
        raise StartScriptError(f"'Env' has {len(value)} entries, more than {MAX_ENV_ENTRIES}.")
    names: list[str] = []
    values: dict[str, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise StartScriptError(f"'Env'[{index}] must be a string, not {_json_type(item)}.")
        _check_text(item, f"'Env'[{index}]", MAX_ARG_BYTES)
        name, sep, val = item.partition("=")
        if not sep:
            raise StartScriptError(f"'Env'[{index}] {item[:80]!r} has no '='.")
        _check_env_name(name)
        if name not in values:
            names.append(name)
        values[name] = val  # Docker: a later duplicate replaces the value, keeps the place.
    return tuple((name, values[name]) for name in names)


def _parse_stop_signal(value: object) -> str:
    if value is None or value == "":
        return "SIGTERM"
    if not isinstance(value, str):
        raise StartScriptError(f"'StopSignal' must be a string, not {_json_type(value)}.")
    if len(value) > MAX_SIGNAL_CHARS:
        raise StartScriptError(f"'StopSignal' is longer than {MAX_SIGNAL_CHARS} characters.")
    if value.isascii() and value.isdigit():
        number = int(value)
        if number not in _CANONICAL_SIGNAL:
            raise StartScriptError(f"'StopSignal' {value!r} is not a Linux signal number.")
        return "SIG" + _CANONICAL_SIGNAL[number]
    upper = value.upper()
    name = upper[3:] if upper.startswith("SIG") else upper
    if not value.isascii() or name not in _SIGNAL_NUMBERS:
        raise StartScriptError(f"'StopSignal' {value[:40]!r} is not a signal Docker knows.")
    return "SIG" + _CANONICAL_SIGNAL[_SIGNAL_NUMBERS[name]]


@dataclass(frozen=True)
class _UserSpec:
    user: str  # a name, or a canonical decimal uid when user_is_id
    user_is_id: bool
    group: str  # "" when User has no group part
    group_is_id: bool


def _parse_id_or_name(part: str, what: str) -> tuple[str, bool]:
    # runc decides with strconv.Atoi: "+12" and "007" are ids, "-1" is an out-of-range id.
    if _ID_RE.fullmatch(part):
        number = int(part)
        if not 0 <= number <= _MAX_ID:
            raise StartScriptError(f"User's {what} {part!r} is outside 0..{_MAX_ID}.")
        return str(number), True
    return part, False


def _parse_user(user: object) -> _UserSpec:
    """Split Docker's User (``user``, ``uid``, ``user:group``, ``uid:gid``, ...)."""
    if not isinstance(user, str):
        raise StartScriptError("User must be a string.")
    _check_text(user, "User", MAX_USER_BYTES)
    if user == "":
        return _UserSpec("0", True, "", False)  # runc: no User = the entry of uid 0
    if "\n" in user:
        raise StartScriptError("User contains a newline, so it cannot name a passwd entry.")
    parts = user.split(":")
    if len(parts) > 2:
        raise StartScriptError(f"User {user[:80]!r} has more than one ':'.")
    if parts[0] == "":
        raise StartScriptError(f"User {user[:80]!r} has an empty user part.")
    name, user_is_id = _parse_id_or_name(parts[0], "uid")
    group, group_is_id = "", False
    if len(parts) == 2:
        if parts[1] == "":
            raise StartScriptError(f"User {user[:80]!r} has an empty group after ':'.")
        group, group_is_id = _parse_id_or_name(parts[1], "gid")
    return _UserSpec(name, user_is_id, group, group_is_id)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _q(text: str) -> str:
    """POSIX single quotes: nothing inside is special to any shell, except ' itself."""
    return "'" + text.replace("'", "'\\''") + "'"


def _delimiter(base: str, *bodies: str) -> str:
    """A here-document delimiter that is not a line of any body (deterministic)."""
    lines = {line for body in bodies for line in body.split("\n")}
    candidate, n = base, 0
    while candidate in lines:
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def _heredoc(command: str, body: str, base: str, then: str = "") -> str:
    """``command <<'DELIM' then`` + body + DELIM. The delimiter is quoted, so the shell
    takes the body literally (no expansion, backslashes kept); it is chosen so that no
    line of the body ends the document early."""
    if not body.endswith("\n"):
        body += "\n"
    delim = _delimiter(base, body)
    return f"{command} <<'{delim}'{then}\n{body}{delim}\n"


def _continued(lines: Iterable[str], indent: str = "\t\t") -> str:
    return "".join(f" \\\n{indent}{line}" for line in lines)


def _env_words(process: OciProcess) -> list[str]:
    """``docker run``'s environment as shell words: PATH and HOSTNAME first (the image's
    own values replace them in place), the image Env in order, then HOME when the image
    does not set it. HOSTNAME and HOME are known only in the guest, at start time."""
    entries: list[tuple[str, str | None]] = [("PATH", DEFAULT_PATH), ("HOSTNAME", None)]
    index = {"PATH": 0, "HOSTNAME": 1}
    for name, value in process.env:
        if name in index:
            entries[index[name]] = (name, value)
        else:
            index[name] = len(entries)
            entries.append((name, value))
    if "HOME" not in index:
        entries.append(("HOME", None))
    runtime = {"HOSTNAME": '"HOSTNAME=$hostname"', "HOME": '"HOME=$home"'}
    return [runtime[name] if value is None else _q(f"{name}={value}") for name, value in entries]


def _signal_forms(stop_signal: str) -> tuple[str, str, str]:
    """StopSignal for systemd (name), OpenRC's retry schedule, and kill(1) (number)."""
    name = stop_signal[3:]
    number = _SIGNAL_NUMBERS[name]
    openrc = name if name in _OPENRC_SIGNALS else f"-{number}"
    return stop_signal, openrc, str(number)


def _unit_file(options: StartScriptOptions, systemd_signal: str) -> str:
    launcher = f"{_RUN_DIR}/{options.name}.launch"
    return f"""\
[Unit]
Description=hookd: app of the container image ({options.name})
# Not enabled on purpose: hookd's START_SCRIPT starts it on every boot.

[Service]
Type=simple
ExecStart=/bin/sh {launcher} run
Restart=on-failure
RestartSec=5
# {_EXIT_REFUSED}: the launcher refused to start (unknown User, no exact way to drop root).
RestartPreventExitStatus={_EXIT_REFUSED}
# Like docker stop: StopSignal to the app, SIGKILL to everything left after 10 s.
KillMode=mixed
KillSignal={systemd_signal}
TimeoutStopSec=10
StandardInput=null
StandardOutput=journal
StandardError=journal
SyslogIdentifier={options.name}
"""


def _openrc_script(options: StartScriptOptions, openrc_signal: str) -> str:
    launcher = f"{_RUN_DIR}/{options.name}.launch"
    return f"""\
#!/sbin/openrc-run
# Generated by hookd; started by its START_SCRIPT on every boot (not in a runlevel).
description="hookd: app of the container image"
supervisor=supervise-daemon
command=/bin/sh
command_args="{launcher} run"
output_log={options.log_file}
error_log={options.log_file}
# Like docker stop: StopSignal, up to 10 s, then SIGKILL.
retry="{openrc_signal}/10/KILL/5"
respawn_delay=5
respawn_max=5
respawn_period=120
"""


_LAUNCHER = r"""#!/bin/sh
# hookd launcher for "@NAME@": generated by hookd from the image config, do not edit.
#
# Starts the image's Entrypoint + Cmd the way `docker run` does: exactly these arguments,
# only the image's environment (plus PATH, HOSTNAME and HOME when the image sets none), in
# its WorkingDir, as its User resolved against this guest's /etc/passwd and /etc/group.
# Image values are single-quoted below and never evaluated by the shell.
#
#   sh THIS start [CHANGED]       from the START_SCRIPT: start (or restart) the app
#   sh THIS run                   from systemd / OpenRC: become the app
#   sh THIS detached [PID START]  without a service manager: register, become the app
#   sh THIS check                 say how the app would run here
#
# Portable POSIX sh (dash, bash, busybox ash): no arrays (the positional parameters are
# the only list), no `local`, no awk, getent or id lookups, `read` for the passwd files.
set -u
umask 022 # Docker's umask for the container process
# Off the context CD that one-context runs us from: it is unmounted after contextualization.
cd / || exit 1

settings() {
	svc=@NAME_Q@
	me=@LAUNCHER_Q@
	pidfile=@PIDFILE_Q@
	logfile=@LOG_Q@
	# Image User, split by hookd at ':'; numeric parts are canonical decimal ids.
	user_spec=@USER_SPEC_Q@
	user=@USER_Q@ user_is_id=@USER_IS_ID@
	group=@GROUP_Q@ group_is_id=@GROUP_IS_ID@
	workdir=@WORKDIR_Q@
	stopsig=@STOP_NUMBER@ # @STOP_NAME@, as a number: dash's kill does not know every name
	require=@REQUIRE_Q@
	context_env=@CONTEXT_ENV@
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	export PATH
	ifs=$(printf ' \t\nx') && ifs=${ifs%x} # the default IFS (the x keeps the newline)
	IFS=$ifs
}
settings
{ read -r boot_id </proc/sys/kernel/random/boot_id; } 2>/dev/null || boot_id=none

log() { printf '%s: %s\n' "$svc" "$*" >&2; }
# Refuse to start: exit 78 (EX_CONFIG), which systemd does not retry. The message also goes
# to the console, from a subshell: a session leader (we are one under systemd and setsid)
# that opens a tty without O_NOCTTY would make it its controlling terminal.
die() {
	log "$*"
	(printf '%s: %s\n' "$svc" "$*" >/dev/console) 2>/dev/null
	exit @EXIT_REFUSED@
}

# id_of TEXT: set $id to TEXT as a decimal id in 0..2147483647 (runc's range), or fail.
id_of() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	id=$1
	while :; do case $id in 0?*) id=${id#0} ;; *) break ;; esac; done
	[ ${#id} -le 10 ] && [ "$id" -le 2147483647 ]
}

# pw_lookup name|uid VALUE: the first /etc/passwd entry with that name or uid (runc picks
# the first match too). Sets pw_name pw_uid pw_gid pw_home.
pw_lookup() {
	[ -r /etc/passwd ] || return 1
	while IFS=: read -r n x u g c h s || [ -n "$n" ]; do
		if [ "$1" = name ]; then
			case $n in "$2") ;; *) continue ;; esac # quoted pattern: compared literally
		else
			id_of "$u" && [ "$id" = "$2" ] || continue
		fi
		id_of "$u" || die "malformed /etc/passwd entry '$n': uid '$u'"
		pw_uid=$id
		id_of "$g" || die "malformed /etc/passwd entry '$n': gid '$g'"
		pw_gid=$id pw_name=$n pw_home=$h
		return 0
	done </etc/passwd
	return 1
}

# gr_lookup VALUE: gid of the first /etc/group entry named VALUE.
gr_lookup() {
	[ -r /etc/group ] || return 1
	while IFS=: read -r n x g m || [ -n "$n" ]; do
		case $n in "$1") ;; *) continue ;; esac
		id_of "$g" || die "malformed /etc/group entry '$n': gid '$g'"
		gr_gid=$id
		return 0
	done </etc/group
	return 1
}

# add_gid GID: append GID to the comma-separated $groups unless it is already there.
add_gid() { case ,$groups, in *,"$1",*) ;; *) groups=${groups:+$groups,}$1 ;; esac; }

# member_gids NAME: add the gids of the /etc/group entries that list NAME as a member.
member_gids() {
	[ -r /etc/group ] || return 0
	while IFS=: read -r n x g m || [ -n "$n" ]; do
		case ,$m, in
		*,"$1",*)
			id_of "$g" || die "malformed /etc/group entry '$n': gid '$g'"
			add_gid "$id"
			;;
		esac
	done </etc/group
}

# resolve: uid, gid, supplementary groups and HOME as `docker run` (runc) computes them.
# A numeric user is always a uid, with or without a passwd entry (without one: gid 0 and
# HOME /); a name must exist. An explicit group replaces the primary group and drops the
# supplementary ones; without one, the user's /etc/group memberships are added. Docker
# lists the primary gid among the supplementary groups as well.
resolve() {
	pw_name='' home=/
	if [ "$user_is_id" = 1 ]; then
		if pw_lookup uid "$user"; then
			uid=$pw_uid gid=$pw_gid home=$pw_home
		else
			uid=$user gid=0
		fi
	elif pw_lookup name "$user"; then
		uid=$pw_uid gid=$pw_gid home=$pw_home
	else
		die "user '$user' (image User '$user_spec') is not in this guest's" \
			"/etc/passwd; not starting the app"
	fi
	[ -n "$home" ] || home=/
	if [ -n "$group" ]; then
		if [ "$group_is_id" = 1 ]; then
			gid=$group
		elif gr_lookup "$group"; then
			gid=$gr_gid
		else
			die "group '$group' (image User '$user_spec') is not in this guest's" \
				"/etc/group; not starting the app"
		fi
		groups=$gid
	else
		groups=$gid
		[ -z "$pw_name" ] || member_gids "$pw_name"
	fi
}

# path_of NAME: set $found to the first executable NAME in $PATH. Tools are always run by
# path: busybox ash may run its own applet for a bare name (FEATURE_PREFER_APPLETS) even
# where util-linux or GNU installed the real one.
path_of() {
	IFS=:
	for d in $PATH; do
		if [ -f "$d/$1" ] && [ -x "$d/$1" ]; then
			IFS=$ifs found=$d/$1
			return 0
		fi
	done
	IFS=$ifs
	return 1
}

# has_option TOOL TEXT: $found is TOOL and its --help mentions TEXT (busybox's setpriv,
# chroot and setsid lack the options the util-linux and GNU ones have).
has_option() {
	path_of "$1" || return 1
	case $("$found" --help 2>&1) in *"$2"*) return 0 ;; esac
	return 1
}

# subset A B: every id of the comma-separated list A is in list B.
subset() {
	IFS=,
	for x in $1; do
		case ,$2, in *,"$x",*) ;; *) IFS=$ifs && return 1 ;; esac
	done
	IFS=$ifs
}

# numeric_names: a user named like $uid, or a group named like one of our gids, exists.
# util-linux setpriv looks "1000" up as a name before taking it as a number, so such an
# entry (say, a user "1000" with uid 0) would give the app the wrong identity.
numeric_names() {
	if [ -r /etc/passwd ]; then
		while IFS=: read -r n x || [ -n "$n" ]; do
			case $n in "$uid") return 0 ;; esac
		done </etc/passwd
	fi
	if [ -r /etc/group ]; then
		while IFS=: read -r n x || [ -n "$n" ]; do
			case ,$gid,$groups, in *,"$n",*) return 0 ;; esac
		done </etc/group
	fi
	return 1
}

# busybox_su_exact: `busybox su NAME` does initgroups(NAME, its passwd gid), setgid and
# setuid. Usable only when that is exactly our uid, gid and groups.
busybox_su_exact() {
	path_of busybox && [ -n "$pw_name" ] || return 1
	case $pw_name in -*) return 1 ;; esac # su would read it as an option
	su_name=$pw_name
	pw_lookup name "$su_name" && [ "$pw_uid" = "$uid" ] && [ "$pw_gid" = "$gid" ] || return 1
	want=$groups
	groups=$gid
	member_gids "$su_name"
	have=$groups
	groups=$want
	subset "$have" "$want" && subset "$want" "$have"
}

# pick_tool: the first tool in this guest that sets exactly uid, gid and groups:
#  setpriv  util-linux: --reuid/--regid/--groups, nothing else (no PAM, no env changes);
#           skipped when a passwd/group name looks like one of our ids (see numeric_names)
#  chroot   GNU coreutils: --userspec/--groups with '+' prefixes, which it never looks up
#           as names; chroot to / with --skip-chdir changes nothing else
#  su       busybox su, only when initgroups gives exactly our groups (busybox_su_exact)
#  none     no switch needed: the target is root:root and we are root
# Otherwise refuse: the app must never run as root when the image asked for another user.
# (gosu, su-exec, runuser and chpst are left out: they do not set exactly Docker's groups,
# resolve names, or go through PAM.)
pick_tool() {
	if has_option setpriv --reuid && ! numeric_names; then
		tool=setpriv tool_path=$found
	elif has_option chroot --skip-chdir; then
		tool=chroot tool_path=$found
	elif busybox_su_exact; then
		tool=su tool_path=$found
	elif [ "$uid:$gid" = 0:0 ]; then
		tool=none tool_path=
	else
		die "cannot switch to uid $uid gid $gid groups $groups (image User" \
			"'$user_spec'): this guest has neither util-linux setpriv nor GNU chroot," \
			"and busybox su cannot set exactly these groups; install util-linux" \
			"(Alpine: apk add setpriv). Refusing to run the app as root"
	fi
}

# alive FILE: FILE holds "BOOT_ID PID START" of a running process of this boot. START, the
# start time (field 22 of /proc/PID/stat), tells our process from a later one that reuses
# the pid. Sets old_pid and old_start.
alive() {
	old_pid='' old_start=''
	{ read -r b p s <"$1"; } 2>/dev/null || return 1
	case $p in '' | *[!0-9]*) return 1 ;; esac
	[ "$b" = "$boot_id" ] && [ -n "$s" ] && [ "$(starttime "$p")" = "$s" ] || return 1
	old_pid=$p old_start=$s
}

# starttime PID: print the start time of a live (not zombie) PID.
starttime() {
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) } # the command name (field 2) may contain spaces and ')': cut after the last
	set -- $st    # fields 3.. : numbers and a state letter, nothing to glob
	[ $# -ge 20 ] && [ "$1" != Z ] || return 1
	shift 19
	printf '%s\n' "$1"
}

# put FILE MODE <CONTENT: replace FILE atomically (temporary file in the same directory,
# then rename), root-owned, with MODE. put_changed=1 unless FILE already had this content.
put() {
	put_changed=0 t=$1.hookd-new
	rm -f "$t" && cat >"$t" && chmod "$2" "$t" || {
		rm -f "$t"
		return 1
	}
	if [ -f "$1" ] && [ "$(cat "$1")" = "$(cat "$t")" ]; then
		rm -f "$t"
		return 0
	fi
	mv -f "$t" "$1" && put_changed=1
}

# run: become the app. Everything that may fail is checked before the final exec.
run() {
	if [ "$context_env" = 1 ] && [ -r /var/run/one-context/one_env ]; then
		# Like OpenNebula's /one_entrypoint.sh: source one-context's variables (a root-only
		# file of `export NAME="value"` lines from the VM's CONTEXT; the VM owner controls
		# it as much as START_SCRIPT) and let them override the image's Env. Collected into
		# the positional parameters, unset again, then our settings restored, so nothing
		# the file sets can change what is computed below.
		set +u
		. /var/run/one-context/one_env
		set -u --
		while IFS= read -r line || [ -n "$line" ]; do
			case $line in "export "[A-Za-z_]*=*) ;; *) continue ;; esac
			n=${line#export }
			n=${n%%=*}
			case $n in *[!A-Za-z0-9_]*) continue ;; esac
			# $n is a plain identifier here, so this eval only reads a variable: v=${NAME}.
			eval "[ -n \"\${$n+set}\" ] && v=\${$n}" || continue
			set -- "$@" "$n=$v"
			unset -v "$n" 2>/dev/null
		done </var/run/one-context/one_env
		settings
	else
		set --
	fi
	resolve
	pick_tool
	# Docker creates a missing WorkingDir (root-owned, 0755) and starts the app in it.
	mkdir -p "$workdir" && cd "$workdir" || die "cannot create or enter WorkingDir '$workdir'"
	hostname=$(uname -n 2>/dev/null) || hostname=
	path_of env || die "env(1) is missing from this guest"
	env_bin=$found
	# The positional parameters become env(1)'s operands: the image environment, then the
	# one-context overlay collected above (env applies them in order: later wins), then
	# argv. argv[0] is looked up by env in the image's PATH, as Docker does.
	set --@ENV@ \
		"$@"
	set -- "$@"@ARGV@
	case $tool in
	setpriv)
		exec "$tool_path" --reuid="$uid" --regid="$gid" --groups="$groups" -- "$env_bin" -i "$@"
		;;
	chroot)
		plus='' IFS=,
		for g in $groups; do plus=${plus:+$plus,}+$g; done
		IFS=$ifs
		exec "$tool_path" --userspec="+$uid:+$gid" --groups="$plus" --skip-chdir -- / \
			"$env_bin" -i "$@"
		;;
	su) exec "$tool_path" su -s "$env_bin" -- "$su_name" -i "$@" ;;
	none) exec "$env_bin" -i "$@" ;;
	esac
}

# detached [PID START]: the process started without a service manager. Register in the
# pidfile (the pid stays the app's: everything below execs), wait for the instance being
# replaced to exit, then become the app.
detached() {
	exec </dev/null >>"$logfile" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
	st=$(starttime $$) && printf '%s %s %s\n' "$boot_id" $$ "$st" >"$pidfile.new" &&
		mv -f "$pidfile.new" "$pidfile" || die "cannot write $pidfile"
	if [ -n "${1-}" ]; then
		# `docker stop`: StopSignal was sent; after 10 s, SIGKILL.
		i=0
		while [ "$(starttime "$1")" = "$2" ]; do
			i=$((i + 1))
			[ $i -ne 11 ] || kill -s 9 "$1" 2>/dev/null
			[ $i -le 15 ] || die "pid $1 does not exit; not starting a second copy"
			sleep 1
		done
	fi
	run
}

start_systemd() {
	unit=/run/systemd/system/$svc.service
	existed=0
	[ -f "$unit" ] && existed=1
	@UNIT_HEREDOC@	# systemd loads a new unit file on first use; one it has loaded needs a reload.
	if [ $put_changed = 1 ]; then
		changed=1
		[ $existed = 0 ] || systemctl daemon-reload || log "systemctl daemon-reload failed"
	fi
	action=start
	[ "$changed" = 0 ] || action=restart
	# --no-block: only queue the job. one-context runs us from a oneshot unit that must
	# never wait for the app (nor for anything ordered after it).
	if ! systemctl --no-block "$action" "$svc.service"; then
		# A name looked up before its file existed can be cached as not-found: reload once.
		systemctl daemon-reload && systemctl --no-block "$action" "$svc.service" ||
			{ log "systemctl $action $svc.service failed" && exit 1; }
	fi
	log "systemctl $action $svc.service queued (journalctl -u $svc)"
}

start_openrc() {
	initd=/etc/init.d/$svc
	@INITD_HEREDOC@	[ $put_changed = 0 ] || changed=1
	action=start
	[ "$changed" = 0 ] || action=restart
	rc-service "$svc" "$action" || { log "rc-service $svc $action failed" && exit 1; }
	log "rc-service $svc $action done (output in $logfile)"
}

# Without a service manager: at most one copy, found again through the pidfile.
start_plain() {
	lock=$pidfile.lock
	me_start=$(starttime $$) || me_start=0
	if ! mkdir "$lock" 2>/dev/null; then
		# One start at a time (one-context serialises its own runs; this covers manual ones).
		if alive "$lock/owner"; then
			log "another start is in progress (pid $old_pid)"
			exit 0
		fi
		rm -rf "$lock"
		mkdir "$lock" 2>/dev/null || { log "another start is in progress" && exit 0; }
	fi
	printf '%s %s %s\n' "$boot_id" $$ "$me_start" >"$lock/owner"
	trap 'rm -rf "$lock"' EXIT
	if alive "$pidfile"; then
		if [ "$changed" = 0 ]; then
			log "already running (pid $old_pid)"
			return 0
		fi
		log "configuration changed: stopping pid $old_pid (@STOP_NAME@);" \
			"the new copy starts once it has exited"
		kill -s "$stopsig" "$old_pid" 2>/dev/null
		set -- "$old_pid" "$old_start"
	else
		rm -f "$pidfile"
		set --
	fi
	# The app's output may hold secrets: a new log file is root-only, like docker logs.
	mkdir -p "${logfile%/*}" && (umask 077 && : >>"$logfile") ||
		{ log "cannot create $logfile" && exit 1; }
	# Detach: a new session, stdin /dev/null, output to $logfile. Spawned by a daemonizer
	# run in the foreground, because a shell starts `cmd &` with SIGINT and SIGQUIT ignored
	# and no later shell can undo that; Docker starts the app with default handlers.
	# (`3>&- ... 9>&-`: do not hand one-context's open files down to the app.)
	if has_option setsid --fork; then
		"$found" -f /bin/sh "$me" detached "$@" \
			</dev/null >>"$logfile" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
	elif path_of busybox && "$found" start-stop-daemon --help >/dev/null 2>&1; then
		# -S -b: fork, setsid, fork again, stdio to /dev/null; -p names a file that never
		# exists, so no running process is taken for ours.
		"$found" start-stop-daemon -S -b -p "$pidfile.none" -x /bin/sh -- "$me" detached "$@"
	else
		log "warning: no util-linux setsid --fork or busybox start-stop-daemon:" \
			"starting from the shell, so the app ignores SIGINT and SIGQUIT"
		setsid=
		path_of setsid && setsid=$found || log "warning: no setsid either: the app" \
			"stays in the session of the START_SCRIPT"
		$setsid /bin/sh "$me" detached "$@" \
			</dev/null >>"$logfile" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	fi
	# Hold the lock until the new copy has registered (a few milliseconds), so a run right
	# after this one finds it.
	i=0
	until { read -r b p s <"$pidfile"; } 2>/dev/null &&
		[ "$b" = "$boot_id" ] && [ "$p" != "${1-}" ]; do
		i=$((i + 1))
		[ $i -le 100 ] || { log "the app did not start, see $logfile" && exit 1; }
		sleep 0.05 2>/dev/null || sleep 1 # fractional sleep: GNU and busybox, not POSIX
	done
	log "started (pid $p, output in $logfile)"
}

# start [CHANGED]: CHANGED=1 (default) when the START_SCRIPT installed a new version of
# this file, so a running app must be restarted to pick it up.
start() {
	changed=${1-1}
	if [ -n "$require" ] && [ ! -f "$require" ]; then
		log "$require not found: the image was not imported by OpenNebula >= 6.2" \
			"or had no Entrypoint/Cmd; nothing to start"
		exit 1
	fi
	resolve
	pick_tool
	log "app runs as uid $uid gid $gid groups $groups (via $tool) in $workdir"
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		start_systemd
	elif [ -d /run/openrc ] && command -v rc-service >/dev/null 2>&1 &&
		command -v supervise-daemon >/dev/null 2>&1; then
		start_openrc
	else
		start_plain
	fi
}

case ${1-} in
start) shift && start "$@" ;;
run) run ;;
detached) shift && detached "$@" ;;
check)
	resolve
	pick_tool
	log "app would run as uid $uid gid $gid groups $groups (via $tool) in $workdir"
	;;
*)
	log "usage: sh $me start|run|detached|check"
	exit 2
	;;
esac
"""

_START_SCRIPT = """#!/bin/sh
# START_SCRIPT generated by hookd: starts the container image's app (service "@NAME@").
# one-context runs it on every boot and reconfigure. It installs the launcher below
# (root-only, in @RUN_DIR@) and runs it; that starts the app through systemd, OpenRC or,
# without either, as a detached process. Running it again never starts a second copy.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077
f=@LAUNCHER@
mkdir -p @RUN_DIR@ && chmod 0700 @RUN_DIR@ || exit 1
rm -f "$f.new" || exit 1
@LAUNCHER_HEREDOC@changed=1
if [ -f "$f" ] && [ "$(cat "$f")" = "$(cat "$f.new")" ]; then changed=0; fi
mv -f "$f.new" "$f" || exit 1
exec /bin/sh "$f" start "$changed"
"""


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _render(process: OciProcess, options: StartScriptOptions, require: str) -> str:
    spec = _parse_user(process.user)
    systemd_signal, openrc_signal, kill_number = _signal_forms(process.stop_signal)
    launcher_path = f"{_RUN_DIR}/{options.name}.launch"
    unit = _heredoc(
        'put "$unit" 0644',
        _unit_file(options, systemd_signal),
        "HOOKD_UNIT_EOF",
        ' || { log "cannot write $unit" && exit 1; }',
    )
    initd = _heredoc(
        'put "$initd" 0755',
        _openrc_script(options, openrc_signal),
        "HOOKD_INITD_EOF",
        ' || { log "cannot write $initd" && exit 1; }',
    )
    launcher = _fill(
        _LAUNCHER,
        {
            "ENV": _continued(_env_words(process)),
            "ARGV": _continued(_q(a) for a in process.argv),
            "UNIT_HEREDOC": unit,
            "INITD_HEREDOC": initd,
            "NAME": options.name,
            "NAME_Q": _q(options.name),
            "LAUNCHER": launcher_path,
            "LAUNCHER_Q": _q(launcher_path),
            "PIDFILE_Q": _q(f"{_RUN_DIR}/{options.name}.pid"),
            "LOG_Q": _q(options.log_file),
            "USER_SPEC_Q": _q(process.user),
            "USER_Q": _q(spec.user),
            "USER_IS_ID": "1" if spec.user_is_id else "0",
            "GROUP_Q": _q(spec.group),
            "GROUP_IS_ID": "1" if spec.group_is_id else "0",
            "WORKDIR_Q": _q(process.workdir),
            "STOP_NUMBER": kill_number,
            "STOP_NAME": systemd_signal,
            "REQUIRE_Q": _q(require),
            "CONTEXT_ENV": "1" if options.context_env else "0",
            "EXIT_REFUSED": str(_EXIT_REFUSED),
        },
    )
    script = _fill(
        _START_SCRIPT,
        {
            "NAME": options.name,
            "LAUNCHER": launcher_path,
            "RUN_DIR": _RUN_DIR,
            "LAUNCHER_HEREDOC": _heredoc(
                'cat >"$f.new"', launcher, "HOOKD_LAUNCHER_EOF", " || exit 1"
            ),
        },
    )
    _check_size(script, options.max_script_bytes)
    return script


def _check_size(script: str, limit: int | None) -> None:
    size = len(script.encode())
    if limit is not None and size > limit:
        raise StartScriptError(
            f"The START_SCRIPT would be {size} bytes, more than {limit}: one-context exports "
            "START_SCRIPT_BASE64 to every context script and Linux refuses an environment "
            "string over 128 KiB, which would break contextualization of the VM."
        )


def build_start_script(
    process: OciProcess, *, options: StartScriptOptions = StartScriptOptions()
) -> str:
    """The START_SCRIPT (POSIX sh) that starts ``process`` in the guest like ``docker run``.

    Deterministic: the same arguments always give byte-identical text. Raises
    :class:`StartScriptError` when the script would exceed ``options.max_script_bytes``.
    """
    if not isinstance(process, OciProcess):
        raise StartScriptError("process must be an OciProcess.")
    if not isinstance(options, StartScriptOptions):
        raise StartScriptError("options must be StartScriptOptions.")
    return _render(process, options, require="")


def build_fallback_script(options: StartScriptOptions = StartScriptOptions()) -> str:
    """START_SCRIPT for when the image config cannot be fetched from the registry.

    Images imported by OpenNebula >= 6.2 carry the app as ``/one_entrypoint.sh`` (its
    docker_downloader wrote the image Env, a ``source`` of one-context's variables and the
    command there). This script starts it with the same detach / supervision / idempotency
    machinery, as root in ``/`` (the file ignores User and WorkingDir anyway, as OpenNebula
    did), and, when the file does not exist, logs why and exits 1 without installing any
    service.
    """
    if not isinstance(options, StartScriptOptions):
        raise StartScriptError("options must be StartScriptOptions.")
    process = OciProcess(argv=(_FALLBACK_ENTRYPOINT,))
    return _render(process, options, require=_FALLBACK_ENTRYPOINT)


def _interpreter(script: str) -> str:
    """Shell words that run a copy of ``script`` saved as "$d/user", chosen from its
    shebang; a script without one runs under bash when the guest has it, as one-context
    runs it. Raises for a shebang that is not a shell."""
    if not script.startswith("#!"):
        return 'if command -v bash >/dev/null 2>&1; then bash "$d/user"; else sh "$d/user"; fi'
    line = script[2:].split("\n", 1)[0]
    words = line.split()  # the kernel splits at spaces and tabs too
    interp = words[0] if words else ""
    base = interp.rsplit("/", 1)[-1]
    rest = line.strip()[len(interp) :].strip()  # Linux passes the rest as one argument
    shell_ok = (
        base in _SHELLS
        or (base == "env" and rest.split("/")[-1] in _SHELLS and " " not in rest)
        or (base == "busybox" and rest in {"sh", "ash"})
    )
    if not interp.startswith("/") or not shell_ok or "\r" in line:
        raise StartScriptError(
            f"The VM's START_SCRIPT starts with {('#!' + line[:60])!r}, not a shell, so "
            "hookd cannot run it together with its own script."
        )
    words_out = [_q(interp)] + ([_q(rest)] if rest else []) + ['"$d/user"']
    return " ".join(words_out)


def compose_with_user_script(
    user_script: str, ours: str, *, max_bytes: int | None = MAX_START_SCRIPT_BYTES
) -> str:
    """One START_SCRIPT that runs the VM owner's ``user_script`` and then hookd's ``ours``.

    Each part is written to its own file and run as its own process (the owner's by its
    shebang's shell, or bash like one-context when it has none; hookd's by /bin/sh), so an
    ``exit``, ``set -e`` or failure in one cannot skip the other. The exit status is the
    first non-zero one. An empty ``user_script`` gives ``ours`` unchanged.

    Raises :class:`StartScriptError` when ``user_script`` has a non-shell shebang (python,
    perl, ...), contains NUL, or the result would exceed ``max_bytes``.
    """
    for text, what in ((user_script, "The VM's START_SCRIPT"), (ours, "hookd's START_SCRIPT")):
        if not isinstance(text, str):
            raise StartScriptError(f"{what} must be a string.")
        if "\x00" in text:
            raise StartScriptError(f"{what} contains a NUL byte.")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise StartScriptError(f"{what} is not valid Unicode.") from None
    if user_script.strip() == "":
        _check_size(ours, max_bytes)
        return ours
    run_user = _interpreter(user_script)
    script = (
        "#!/bin/sh\n"
        "# START_SCRIPT composed by hookd: the VM's own START_SCRIPT, then hookd's. Each runs\n"
        "# as its own process from its own file, so an `exit` or `set -e` in one cannot skip\n"
        "# the other. Exit status: the first non-zero one.\n"
        'd=$(mktemp -d "${TMPDIR:-/tmp}/hookd-start.XXXXXX") || exit 1\n'
        "trap 'rm -rf \"$d\"' EXIT\n"
        + _heredoc('cat >"$d/user"', user_script, "HOOKD_USER_SCRIPT_EOF", " || exit 1")
        + _heredoc('cat >"$d/hookd"', ours, "HOOKD_SCRIPT_EOF", " || exit 1")
        + "rc=0\n"
        f"{run_user} || rc=$?\n"
        '/bin/sh "$d/hookd" || { s=$?; [ "$rc" -ne 0 ] || rc=$s; }\n'
        'exit "$rc"\n'
    )
    _check_size(script, max_bytes)
    return script
