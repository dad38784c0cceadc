"""START_SCRIPT generator: run a Docker image's Entrypoint + Cmd inside an OpenNebula VM.

OpenNebula's Docker import drops the image's process definition (Entrypoint, Cmd, Env,
WorkingDir, User, StopSignal). hookd puts it back as a contextualization START_SCRIPT
(delivered base64-encoded as ``CONTEXT/START_SCRIPT_BASE64``) that starts the app the way
``docker run`` would. Everything here is a pure function of its arguments: no I/O but reading
the package's own shell files once, no clock, no logging, so the same input always yields
byte-identical text (hookd hashes it).

Public API:

* :func:`parse_oci_config` / :func:`load_oci_config` — image config JSON → :class:`OciProcess`.
* :func:`build_start_script` — :class:`OciProcess` → START_SCRIPT text, as templates carry it.
* :func:`build_fallback_script` — START_SCRIPT that starts OpenNebula's ``/one_entrypoint.sh``.
* :func:`compose_with_user_script` — run a VM owner's START_SCRIPT and hookd's, isolated.
* :func:`readable_script`, :func:`readable_fallback_script` — the same scripts for review,
  and :func:`readable_start_script`, which turns any START_SCRIPT hookd wrote into that form.

The shell is shell files in this package (package data), commented, checked by shellcheck:

* ``start_script.sh`` — the START_SCRIPT. one-context runs it synchronously, as root, on
  every boot and every reconfigure; it writes the launcher root-only to
  ``/run/hookd/<name>.launch`` and runs it.
* ``launcher.sh`` — resolves the image's User against the guest's /etc/passwd and
  /etc/group (as runc does for ``docker run``) and starts the app detached from
  one-context: as a systemd service, as an OpenRC ``supervise-daemon`` service, or, with
  neither, as a detached session leader with a pidfile. The app is finally exec'ed by
  ``env -i`` with exactly the image's environment, after the privileges were dropped with the
  first exact tool the guest has.
* ``fallback.sh`` — the fallback START_SCRIPT (``/one_entrypoint.sh`` as root).

Rendering substitutes ``@WORD@`` placeholders with single-quoted literals made by one
quoting function (:func:`_q`), in one pass, and drops comment lines and indentation. The
launcher's first part, the image's values, stays text in the template; its second part,
hookd's code (the same for every image, most of the weight), is gzip-compressed and
base64-encoded, and unpacked in the guest with ``base64 -d | gzip -dc``. The fallback is
packed whole behind a one-line stub. A typical Docker Hub START_SCRIPT_BASE64 is about 6,600
characters, the fallback's under 2,000 (tests/start_script/test_weight.py).

Size limit: one-context exports every context variable, START_SCRIPT_BASE64 included, into
the environment of each context script it runs. Linux refuses an exec whose environment
holds a string over 128 KiB (MAX_ARG_STRLEN), which would break contextualization of the
whole VM, so by default a script whose base64 form would exceed that is refused
(:data:`MAX_START_SCRIPT_BYTES`).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from importlib import resources

from handlers.errors import PermanentError

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
_CANONICAL_SIGNAL = {number: name for name, number in reversed(_SIGNAL_NUMBERS.items())}
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


# JSON's types as json.loads returns them; bool before int, which it subclasses.
_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "null"), (bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
    (list, "a list"), (dict, "an object"),
)


def _json_type(value: object) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)),
                type(value).__name__)


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
    values: dict[str, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise StartScriptError(f"'Env'[{index}] must be a string, not {_json_type(item)}.")
        _check_text(item, f"'Env'[{index}]", MAX_ARG_BYTES)
        name, sep, val = item.partition("=")
        if not sep:
            raise StartScriptError(f"'Env'[{index}] {item[:80]!r} has no '='.")
        _check_env_name(name)
        values[name] = val  # Docker: a later duplicate replaces the value, keeps the place.
    return tuple(values.items())


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


def _parse_id_or_name(part: str, what: str) -> str:
    # runc decides with strconv.Atoi: "+12" and "007" are ids, "-1" is an out-of-range id.
    if _ID_RE.fullmatch(part):
        number = int(part)
        if not 0 <= number <= _MAX_ID:
            raise StartScriptError(f"User's {what} {part!r} is outside 0..{_MAX_ID}.")
        return str(number)
    return part


def _parse_user(user: object) -> tuple[str, str]:
    """Split Docker's User (``user``, ``uid``, ``user:group``, ``uid:gid``, ...) into user and
    group (``""`` when it has no group part): a name as written, an id in canonical decimal."""
    if not isinstance(user, str):
        raise StartScriptError("User must be a string.")
    _check_text(user, "User", MAX_USER_BYTES)
    if user == "":
        return "0", ""  # runc: no User = the entry of uid 0
    if "\n" in user:
        raise StartScriptError("User contains a newline, so it cannot name a passwd entry.")
    parts = user.split(":")
    if len(parts) > 2:
        raise StartScriptError(f"User {user[:80]!r} has more than one ':'.")
    if parts[0] == "":
        raise StartScriptError(f"User {user[:80]!r} has an empty user part.")
    name = _parse_id_or_name(parts[0], "uid")
    group = ""
    if len(parts) == 2:
        if parts[1] == "":
            raise StartScriptError(f"User {user[:80]!r} has an empty group after ':'.")
        group = _parse_id_or_name(parts[1], "gid")
    return name, group


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

# The shell sources are package data of ``handlers`` (setup.cfg): start_script.sh (the
# START_SCRIPT), launcher.sh (the launcher it installs: the image's values, then a line
# ``#@code``, then hookd's code) and fallback.sh (the fallback START_SCRIPT). Placeholders
# are ``@WORD@``; a line that is only ``@ENV@ \`` or ``@ARGV@`` becomes one word per line.
_START_SCRIPT_FILE = "start_script.sh"
_LAUNCHER_FILE = "launcher.sh"
_FALLBACK_FILE = "fallback.sh"
_SHELL_FILES = (_START_SCRIPT_FILE, _LAUNCHER_FILE, _FALLBACK_FILE)
_LAUNCHER_DELIMITER = "HOOKD_LAUNCHER_EOF"
_CODE_DELIMITER = "HOOKD_CODE_EOF"
_CODE_MARKER = "#@code"
# How start_script.sh writes the code part: unpacked, or as it is (the readable form).
_UNPACK = f"base64 -d <<'{_CODE_DELIMITER}' | gzip -dc"
_AS_IS = f"cat <<'{_CODE_DELIMITER}'"
# Sections of launcher.sh kept only when wanted: "context_env" overlays one-context's
# variables (StartScriptOptions.context_env).
_FEATURES = frozenset({"context_env"})
_PLACEHOLDER_RE = re.compile(r"^@(ENV|ARGV)@( \\)?$|@([A-Z_]+)@", re.M)
# A here-document operator; only quoted-or-bare delimiters, never ``<<-`` (it strips tabs).
_HEREDOC_RE = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
# The packed parts, as hookd writes them (see _pack and build_fallback_script).
_PACKED_CODE_RE = re.compile(
    rf"^base64 -d <<'({_CODE_DELIMITER}(?:_[0-9]+)?)' \| gzip -dc\n([A-Za-z0-9+/=\n]+?)\n\1$",
    re.M,
)
_PACKED_SCRIPT_RE = re.compile(r'^eval "\$\(echo ([A-Za-z0-9+/=]+)\|base64 -d\|gzip -dc\)"$', re.M)
# Unpacking refuses more than this (a template can hold anything; hookd's parts are ~20 KB).
_MAX_UNPACKED_BYTES = 1024 * 1024


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


def _select(source: str, features: frozenset[str]) -> str:
    """Keep the lines between ``#@if FEATURE`` and ``#@fi`` only when FEATURE is wanted."""
    out: list[str] = []
    section: str | None = None
    for line in source.split("\n"):
        marker = line.strip()
        if marker.startswith("#@if "):
            if section is not None or marker[5:] not in _FEATURES:
                raise AssertionError(f"bad section marker {marker!r}")
            section = marker[5:]
        elif marker == "#@fi":
            if section is None:
                raise AssertionError("#@fi without #@if")
            section = None
        elif section is None or section in features:
            out.append(line)
    if section is not None:
        raise AssertionError(f"unterminated section {section!r}")
    return "\n".join(out)


def strip_shell(source: str) -> str:
    """``source`` without comment lines, indentation and runs of blank lines.

    A first line ``#!...`` stays; here-document bodies are copied unchanged. Only whole
    comment lines go (hookd's sources have no comments after code).
    """
    out: list[str] = []
    ends: list[str] = []  # delimiters of the here-documents being copied
    for number, line in enumerate(source.split("\n")):
        if ends:
            out.append(line)
            if line == ends[0]:
                ends.pop(0)
            continue
        text = line.lstrip(" \t")
        if text.startswith("#") and not (number == 0 and text.startswith("#!")):
            continue
        if text == "" and (not out or out[-1] in ("", "#!/bin/sh")):
            continue
        out.append(text)
        for match in _HEREDOC_RE.finditer(text):
            if match.group(1):
                raise AssertionError(f"<<- is not supported: {text!r}")
            ends.append(match.group(3))
    if ends:
        raise AssertionError(f"unterminated here-document {ends[0]!r}")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


@functools.cache
def shell_source(file_name: str) -> str:
    """The commented source of one of hookd's shell files (read once per process)."""
    if file_name not in _SHELL_FILES:
        raise ValueError(f"not a shell file of hookd: {file_name!r}")
    return resources.files("handlers").joinpath(file_name).read_text(encoding="utf-8")


@functools.cache
def _template(file_name: str) -> str:
    return strip_shell(shell_source(file_name))


@functools.cache
def _launcher_template(features: frozenset[str]) -> tuple[str, str]:
    """launcher.sh with these sections, stripped: (values part, code part)."""
    values, marker, code = _select(shell_source(_LAUNCHER_FILE), features).partition(
        f"\n{_CODE_MARKER}\n"
    )
    code = strip_shell(code)
    if not marker or _PLACEHOLDER_RE.search(code) or _CODE_DELIMITER in code:
        raise AssertionError("launcher.sh: the code part must follow #@code, without values")
    return strip_shell(values), code


def _substitute(template: str, words: dict[str, str], lists: dict[str, list[str]]) -> str:
    """Replace every placeholder in one pass (a value is never scanned again). ``words``
    are shell words already (quoted by :func:`_q`, or numbers); each item of ``lists`` goes
    on a line of its own, indented, joined by line continuations."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            items = lists[match.group(1)]
            ends = [" \\"] * (len(items) - 1) + [" \\" if match.group(2) else ""]
            return "\n".join(f"\t\t{item}{end}" for item, end in zip(items, ends, strict=True))
        return words[match.group(3)]

    return _PLACEHOLDER_RE.sub(replace, template)


def _pack(text: str) -> str:
    """gzip (no name, no time) and base64, in lines of 76 characters.

    Byte-identical for the same text with the same zlib: zlib's level-9 output has not
    changed across its 1.2 and 1.3 releases. A Python built on another deflate (zlib-ng)
    would pack differently; hookd would then rewrite each template's script once.
    """
    packed = base64.b64encode(gzip.compress(text.encode("utf-8"), 9, mtime=0)).decode("ascii")
    return "\n".join(packed[i : i + 76] for i in range(0, len(packed), 76))


def _unpack(packed: str) -> str | None:
    """Undo :func:`_pack`; None for anything that is not a small gzip of UTF-8 text."""
    try:
        data = base64.b64decode("".join(packed.split()), validate=True)
        inflater = zlib.decompressobj(wbits=31)  # gzip framing
        text = inflater.decompress(data, _MAX_UNPACKED_BYTES + 1)
        if len(text) > _MAX_UNPACKED_BYTES or not inflater.eof:
            return None
        return text.decode("utf-8")
    except (ValueError, zlib.error):  # binascii.Error and UnicodeDecodeError included
        return None


def _env_words(process: OciProcess) -> list[str]:
    """``docker run``'s environment as shell words: PATH and HOSTNAME first (the image's
    own values replace them in place), the image Env in order, then HOME when the image
    does not set it. HOSTNAME and HOME are known only in the guest, at start time."""
    entries: dict[str, str | None] = {"PATH": DEFAULT_PATH, "HOSTNAME": None}
    entries.update(process.env)  # a dict keeps a replaced name in its place
    entries.setdefault("HOME", None)
    runtime = {"HOSTNAME": '"HOSTNAME=$hostname"', "HOME": '"HOME=$home"'}
    return [runtime[name] if value is None else _q(f"{name}={value}")
            for name, value in entries.items()]


def _render(process: OciProcess, options: StartScriptOptions, *, packed: bool) -> str:
    """start_script.sh around launcher.sh rendered for ``process``: the code part packed
    (what templates carry) or as it is (the readable form; it runs the same way)."""
    user, group = _parse_user(process.user)
    signal = process.stop_signal[3:]
    number = _SIGNAL_NUMBERS[signal]
    words = {
        "NAME": _q(options.name),
        "LOG": _q(options.log_file),
        "USER_SPEC": _q(process.user),
        # A name never consists of digits only (that is an id), so the shell tells them apart.
        "USER": _q(user),
        "GROUP": _q(group),
        "WORKDIR": _q(process.workdir),
        "STOP_NUMBER": str(number),
        "STOP_NAME": _q(process.stop_signal),
        "STOP_OPENRC": _q(signal if signal in _OPENRC_SIGNALS else f"-{number}"),
    }
    lists = {"ENV": _env_words(process), "ARGV": [_q(a) for a in process.argv]}
    features = frozenset({"context_env"} if options.context_env else set())
    values_template, code = _launcher_template(features)
    values = _substitute(values_template, words, lists)
    delimiter = _delimiter(_LAUNCHER_DELIMITER, values)
    wrapper = _template(_START_SCRIPT_FILE)
    if wrapper.count(f"\n{_UNPACK}\n") != 1:
        raise AssertionError(f"start_script.sh must have one line {_UNPACK!r}")
    if not packed:
        wrapper = wrapper.replace(f"\n{_UNPACK}\n", f"\n{_AS_IS}\n")
    wrapper = wrapper.replace(f"'{_LAUNCHER_DELIMITER}'", f"'{delimiter}'").replace(
        f"\n{_LAUNCHER_DELIMITER}\n", f"\n{delimiter}\n"
    )
    body = _pack(code) if packed else code[:-1]
    return _substitute(wrapper, {"NAME": _q(options.name), "VALUES": values[:-1], "CODE": body}, {})


def _render_fallback(options: StartScriptOptions, *, packed: bool) -> str:
    """fallback.sh for these options; packed: a stub that unpacks and evaluates it."""
    script = _substitute(
        _template(_FALLBACK_FILE), {"NAME": _q(options.name), "LOG": _q(options.log_file)}, {}
    )
    if not packed:
        return script
    # One line: `echo` hands eval the text without a here-document inside $(...).
    stub = "".join(_pack(script).split())
    return f'#!/bin/sh\neval "$(echo {stub}|base64 -d|gzip -dc)"\n'


def readable_start_script(script: str) -> str:
    """The readable form of a START_SCRIPT: hookd's packed parts unpacked, the rest as is.

    For what a template carries (``hookd start-script --template``): a START_SCRIPT of
    :func:`build_start_script` becomes the one ``hookd start-script`` prints (the code of
    the launcher inline as text), one of :func:`build_fallback_script` the fallback script
    itself, also inside a script of :func:`compose_with_user_script`. Anything else,
    including a packed part that does not unpack to text, is returned unchanged.
    """
    def unpack_script(match: re.Match[str]) -> str:
        # The stub's line becomes the script it evaluates (its #!/bin/sh is the stub's).
        text = _unpack(match.group(1))
        if text is None:
            return match.group(0)
        return text.removeprefix("#!/bin/sh\n").removesuffix("\n")

    def unpack(match: re.Match[str]) -> str:
        text = _unpack(match.group(2))
        if text is None or f"\n{match.group(1)}\n" in f"\n{text}":
            return match.group(0)
        return f"cat <<'{match.group(1)}'\n{text}{match.group(1)}"

    return _PACKED_SCRIPT_RE.sub(unpack_script, _PACKED_CODE_RE.sub(unpack, script))


def readable_script(process: OciProcess, options: StartScriptOptions = StartScriptOptions()) -> str:
    """What :func:`build_start_script` returns, with the launcher's code as text: the
    script ``hookd start-script`` prints for review (it runs the same way)."""
    if not isinstance(process, OciProcess) or not isinstance(options, StartScriptOptions):
        raise StartScriptError("process and options must be OciProcess and StartScriptOptions.")
    return _render(process, options, packed=False)


def readable_fallback_script(options: StartScriptOptions = StartScriptOptions()) -> str:
    """What :func:`build_fallback_script` packs: the fallback script as text."""
    if not isinstance(options, StartScriptOptions):
        raise StartScriptError("options must be StartScriptOptions.")
    return _render_fallback(options, packed=False)


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
    script = _render(process, options, packed=True)
    _check_size(script, options.max_script_bytes)
    return script


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
    script = _render_fallback(options, packed=True)
    _check_size(script, options.max_script_bytes)
    return script


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
