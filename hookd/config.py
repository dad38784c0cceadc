"""hookd's configuration: a YAML file plus OpenNebula's own connection conventions.

Default file: ``/etc/one/hookd.conf`` (``--config`` overrides it). Every key is optional.
A key set in the file wins; otherwise OpenNebula's conventions apply, as the Ruby OCA
implements them (src/oca/ruby/opennebula/client.rb):

* endpoint: ``$ONE_XMLRPC``, ``~/.one/one_endpoint``, ``/var/lib/one/.one/one_endpoint``,
  ``http://localhost:2633/RPC2``;
* credentials: the file named by ``$ONE_AUTH``, ``~/.one/one_auth``,
  ``/var/lib/one/.one/one_auth`` (one line ``user:password``);
* event stream: ``$ONE_ZMQ``, ``tcp://localhost:2101``.

An unknown key or a value of the wrong type is a :class:`~hookd.errors.ConfigError` that names
the key and the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handlers.errors import PermanentError


class ConfigError(PermanentError):
    """The configuration file or environment is wrong; the message names the key and the file."""


DEFAULT_PATH = Path("/etc/one/hookd.conf")
DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
DEFAULT_ZMQ = "tcp://localhost:2101"
ONEADMIN_HOME = Path("/var/lib/one")


# -- the schema ------------------------------------------------------------------------------
@dataclass(frozen=True)
class F:
    """One key: its type(s), default, and an optional check returning an error or None."""

    types: tuple[type, ...]
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _number(low: float, high: float, *, low_inclusive: bool = False
            ) -> Callable[[Any], str | None]:
    """A finite number in (low, high] (or [low, high]): ``.inf``, ``.nan`` and values whose
    milliseconds overflow a C int (ZeroMQ options) never reach the daemon."""
    def check(value: Any) -> str | None:
        number = float(value)
        above = number >= low if low_inclusive else number > low
        if not math.isfinite(number) or not above or number > high:
            bracket = "[" if low_inclusive else "("
            return f"must be a number in {bracket}{low:g}, {high:g}]"
        return None
    return check


_SECONDS = _number(0, 86400)  # any duration: more than 0, at most a day
_SHORT = _number(0, 3600)  # timeouts and intervals of a connection: at most an hour


def _count(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high}"
    return check


def _endpoint(*schemes: str) -> Callable[[Any], str | None]:
    """A URL with one of ``schemes``, a host and, if given, a port in 1..65535."""
    def check(value: Any) -> str | None:
        text = str(value)
        if not text.startswith(schemes):
            return f"must start with {' or '.join(schemes)}"
        if text.startswith("ipc://"):
            return None if len(text) > len("ipc://") else "must name a socket path"
        try:
            parsed = urlsplit(text)
            port = parsed.port
        except ValueError as exc:
            return f"is not a valid URL ({exc})"
        if not parsed.hostname:
            return "must name a host"
        if text.startswith("tcp://") and port is None:
            return "must name a port (tcp://host:port)"
        return None
    return check


def _host_port(value: Any) -> str | None:
    host, sep, port = str(value).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be host:port (e.g. 127.0.0.1:9925)"
    return None


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def _attribute_name(value: Any) -> str | None:
    ok = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", str(value))
    return None if ok else "must be a template attribute name (letters, digits, _)"


def _service_name(value: Any) -> str | None:
    from handlers.start_script import StartScriptError, StartScriptOptions

    try:
        StartScriptOptions(name=str(value))
    except StartScriptError as exc:
        return f"is not usable: {exc.reason}"
    return None


def _readable_file(value: Any) -> str | None:
    problem = _file_problem(Path(str(value)))
    return f"{value}: {problem}" if problem else None


def _tls_verify(value: Any) -> str | None:
    return None if isinstance(value, bool) else _readable_file(value)


def _text_line(value: Any) -> str | None:
    return None if not _CONTROL.search(str(value)) else "must not contain control characters"


_CONTROL = re.compile("[\x00-\x1f\x7f]")
_ID_OR_NAME = (int, str)

SCHEMA: dict[str, dict[str, F]] = {
    "one": {
        "xmlrpc": F((str,), None, _endpoint("http://", "https://"), "XML-RPC endpoint"),
        "auth_file": F((str,), None, None, "file holding user:password"),
        "zmq": F((str,), None, _endpoint("tcp://", "ipc://"), "oned's event stream (one_hm PUB)"),
        "connect_timeout": F((int, float), 5.0, _number(0, 300)),
        "timeout": F((int, float), 30.0, _SHORT, "read timeout of every XML-RPC call"),
        "tls_verify": F((bool, str), True, _tls_verify, "true, false, or a CA bundle path"),
        "page_size": F((int,), 2000, _count(2, 100_000), "objects per pool page"),
    },
    "kernels": {
        "kvm": F(_ID_OR_NAME, None, None, "KERNEL image (ID or name) for KVM"),
        "firecracker": F(_ID_OR_NAME, None, None, "KERNEL image for Firecracker"),
        "owner": F(_ID_OR_NAME, "oneadmin", None,
                   "a kernel or initrd given by name must belong to this user (name or ID)"),
    },
    "initrds": {
        "kvm": F(_ID_OR_NAME, None, None, "RAMDISK image for KVM"),
        "firecracker": F(_ID_OR_NAME, None, None, "ignored by OpenNebula (#5382); warned"),
    },
    "kernel_cmdline": {
        "kvm": F((str,), "rw console=ttyS0", _text_line),
        "firecracker": F((str,), "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux "
                                 "i8042.nomux i8042.nopnp i8042.dumbkbd", _text_line),
    },
    "hypervisors": {
        "prefer": F((list,), ["lxc", "firecracker", "kvm"]),
        "pin": F((bool,), True),
        "datastores": F((dict,), {}, None, "datastore ID -> hypervisor override"),
        "clusters": F((dict,), {}, None, "cluster ID -> hypervisor override"),
    },
    "scope": {
        "datastores": F((list,), [], None, "only these image datastores (empty: all)"),
        "opt_attribute": F((str,), "HOOKD_MANAGE", _attribute_name),
    },
    "start_script": {
        "enabled": F((bool,), True),
        "policy": F((str,), "keep", _choice("keep", "append")),
        "context_env": F((bool,), False),
        "fallback": F((bool,), True, None, "start /one_entrypoint.sh when the registry fails"),
        "service_name": F((str,), "hookd-app", _service_name),
    },
    "registries": {
        "platform": F((str,), "linux/amd64", lambda v: None if re.fullmatch(
            r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", str(v)) else "must be os/architecture[/variant]"),
        "mirrors": F((dict,), {}, None, "registry host -> list of mirror URLs"),
        "credentials": F((dict,), {}, None, "registry host -> {username, password_file}"),
        "insecure": F((list,), [], None, "registries spoken to over plain HTTP"),
        "ca_bundle": F((str,), None, _readable_file),
        "timeout": F((int, float), 15.0, _number(0, 600)),
        "cache_dir": F((str,), "/var/lib/hookd/oci-cache"),
        "docker_socket": F((str,), None),
    },
    "reconcile": {
        "workers": F((int,), 8, _count(1, 256)),
        "sweep_interval": F((int, float), 600, _number(0, 7 * 86400),
                            "seconds between full sweeps"),
        "attempts": F((int,), 8, _count(1, 1000),
                      "attempts before a transient failure is an error"),
        "backoff_initial": F((int, float), 1.0, _SHORT),
        "backoff_max": F((int, float), 300.0, _SECONDS),
        "shutdown_timeout": F((int, float), 20.0, _SHORT),
    },
    "events": {
        "heartbeat_interval": F((int, float), 5.0, _SHORT),
        "heartbeat_timeout": F((int, float), 15.0, _SHORT),
        "reconnect_initial": F((int, float), 0.1, _SHORT),
        "reconnect_max": F((int, float), 30.0, _SHORT),
        "max_message_bytes": F((int,), 4 * 1024 * 1024, _count(4096, 256 * 1024 * 1024)),
    },
    "ha": {
        "poll_interval": F((int, float), 5.0, _SHORT),
    },
    "log": {
        "level": F((str,), "info", _choice("debug", "info", "warning", "error")),
        "file": F((str,), None, None, "JSON lines file, e.g. /var/log/one/hookd.log"),
        "format": F((str,), "auto", _choice("auto", "json", "console")),
    },
    "metrics": {
        "listen": F((str,), None, _host_port, "host:port of the Prometheus endpoint (loopback)"),
    },
}


# -- the result --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    path: Path | None
    sections: Mapping[str, Mapping[str, Any]]
    xmlrpc: str
    xmlrpc_origin: str
    auth_file: Path | None
    zmq: str
    zmq_origin: str

    def get(self, section: str, key: str) -> Any:
        return self.sections[section][key]

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "built-in defaults"


@dataclass(frozen=True)
class Environment:
    """What the conventions read; injectable for tests."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path | None = None
    oneadmin_home: Path = ONEADMIN_HOME

    def user_home(self) -> Path:
        return self.home if self.home is not None else Path.home()


def _file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, or None."""
    try:
        if not path.is_file():
            return "does not exist" if not path.exists() else "is not a regular file"
        with path.open("rb"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file, or a :class:`ConfigError` naming it and why not."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_yaml(path: Path, *, reload: bool = False) -> dict[str, Any]:
    import yaml

    text = read_text_file(path, "configuration file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        if reload:
            # A file truncated by an editor or a full disk is not "all defaults".
            raise ConfigError(f"{path} is empty: a reload does not take an empty file as "
                              f"the built-in defaults (restart hookd to run on defaults)")
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _validate(data: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section in data:
        if section not in SCHEMA:
            raise ConfigError(f"unknown section {section!r} in {where} (known: "
                              f"{', '.join(sorted(SCHEMA))})")
    for section, fields in SCHEMA.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section} in {where} must be a mapping")
        for key in given:
            if key not in fields:
                raise ConfigError(f"unknown key {section}.{key} in {where} (known: "
                                  f"{', '.join(sorted(fields))})")
        values: dict[str, Any] = {}
        for key, spec in fields.items():
            value = given.get(key, spec.default)
            if key in given and value is not None:
                ok = isinstance(value, spec.types) and not (
                    isinstance(value, bool) and bool not in spec.types)
                if not ok:
                    raise ConfigError(f"{section}.{key} in {where} must be "
                                      f"{_type_names(spec.types)}, not {value!r}")
                if spec.check is not None:
                    problem = spec.check(value)
                    if problem:
                        raise ConfigError(f"{section}.{key} in {where} {problem}")
            if isinstance(value, (list, dict)):
                value = type(value)(value)
            values[key] = value
        out[section] = values
    _validate_semantics(out, where)
    return out


_HYPERVISORS = ("kvm", "qemu", "firecracker", "lxc", "lxd", "vcenter")


def _validate_semantics(sections: dict[str, dict[str, Any]], where: str) -> None:
    for hv in sections["hypervisors"]["prefer"]:
        if hv not in _HYPERVISORS:
            raise ConfigError(f"hypervisors.prefer in {where}: unknown hypervisor {hv!r} "
                              f"(known: {', '.join(_HYPERVISORS)})")
    for kind in ("datastores", "clusters"):
        mapping = sections["hypervisors"][kind]
        for key, hv in mapping.items():
            if not isinstance(key, int) or hv not in _HYPERVISORS:
                raise ConfigError(f"hypervisors.{kind} in {where}: entries must be "
                                  f"<numeric id>: <hypervisor>, got {key!r}: {hv!r}")
    for ds in sections["scope"]["datastores"]:
        if not isinstance(ds, int) or isinstance(ds, bool) or ds < 0:
            raise ConfigError(f"scope.datastores in {where} must list numeric datastore IDs")
    for section in ("kernels", "initrds"):
        for key, ref in sections[section].items():
            if (isinstance(ref, int) and not isinstance(ref, bool) and ref < 0) or (
                    isinstance(ref, str) and (not ref.strip() or _CONTROL.search(ref))):
                raise ConfigError(f"{section}.{key} in {where} must be an image ID (0 or more) "
                                  f"or a name, not {ref!r}")
    check_url = _endpoint("http://", "https://")
    for host, mirrors in sections["registries"]["mirrors"].items():
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise ConfigError(f"registries.mirrors.{host} in {where} must be a list of URLs")
        for mirror in mirrors:
            if (problem := check_url(mirror)) is not None:
                raise ConfigError(f"registries.mirrors.{host} in {where}: {mirror!r} {problem}")
    for host in sections["registries"]["insecure"]:
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"registries.insecure in {where} must list registry hosts")
    for host, creds in sections["registries"]["credentials"].items():
        if not isinstance(creds, dict) or set(creds) != {"username", "password_file"}:
            raise ConfigError(f"registries.credentials.{host} in {where} must be a mapping "
                              f"with username and password_file")
        username, password_file = creds["username"], creds["password_file"]
        if not isinstance(username, str) or not username.strip():
            raise ConfigError(f"registries.credentials.{host}.username in {where} must be a "
                              f"user name")
        if not isinstance(password_file, str) or not password_file:
            raise ConfigError(f"registries.credentials.{host}.password_file in {where} must "
                              f"be a file name")
        password = read_text_file(Path(password_file),
                                  f"registries.credentials.{host}.password_file").strip()
        if not password:
            raise ConfigError(f"registries.credentials.{host}.password_file {password_file} "
                              f"is empty")


def _first_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.strip()
    return text.splitlines()[0].strip() if text else None


def resolve_endpoint(configured: str | None, env: Environment) -> tuple[str, str]:
    if configured:
        return configured, "hookd.conf one.xmlrpc"
    if env.env.get("ONE_XMLRPC"):
        return env.env["ONE_XMLRPC"], "$ONE_XMLRPC"
    for candidate in (env.user_home() / ".one" / "one_endpoint",
                      env.oneadmin_home / ".one" / "one_endpoint"):
        value = _first_line(candidate)
        if value:
            return value, str(candidate)
    return DEFAULT_ENDPOINT, "default"


def resolve_auth_file(configured: str | None, env: Environment) -> Path | None:
    if configured:
        return Path(configured)
    if env.env.get("ONE_AUTH"):
        return Path(env.env["ONE_AUTH"])
    for candidate in (env.user_home() / ".one" / "one_auth",
                      env.oneadmin_home / ".one" / "one_auth"):
        if candidate.exists():
            return candidate
    return None


def resolve_zmq(configured: str | None, env: Environment) -> tuple[str, str]:
    if configured:
        return configured, "hookd.conf one.zmq"
    if env.env.get("ONE_ZMQ"):
        return env.env["ONE_ZMQ"], "$ONE_ZMQ"
    return DEFAULT_ZMQ, "default"


def load(path: Path | None = None, *, env: Environment | None = None,
         required: bool = False, reload: bool = False) -> Config:
    """Load and validate. Without ``path`` the default file is read if it exists.

    ``reload``: the running daemon re-reads its file (SIGHUP); an empty file is refused.
    """
    env = env or Environment()
    data: dict[str, Any] = {}
    used: Path | None = None
    if path is not None:
        data = _load_yaml(path, reload=reload)
        used = path
    elif DEFAULT_PATH.exists():
        data = _load_yaml(DEFAULT_PATH, reload=reload)
        used = DEFAULT_PATH
    elif required:
        raise ConfigError(f"configuration file {DEFAULT_PATH} does not exist")
    where = str(used) if used else "the built-in defaults"
    sections = _validate(data, where)
    one = sections["one"]
    endpoint, endpoint_origin = resolve_endpoint(one["xmlrpc"], env)
    if (problem := _endpoint("http://", "https://")(endpoint)) is not None:
        raise ConfigError(f"the XML-RPC endpoint {endpoint!r} (from {endpoint_origin}) "
                          f"{problem}")
    zmq, zmq_origin = resolve_zmq(one["zmq"], env)
    if (problem := _endpoint("tcp://", "ipc://")(zmq)) is not None:
        raise ConfigError(f"the event stream {zmq!r} (from {zmq_origin}) {problem}")
    return Config(
        path=used,
        sections=sections,
        xmlrpc=endpoint,
        xmlrpc_origin=endpoint_origin,
        auth_file=resolve_auth_file(one["auth_file"], env),
        zmq=zmq,
        zmq_origin=zmq_origin,
    )


def from_mapping(data: Mapping[str, Any], *, env: Environment | None = None) -> Config:
    """Build a configuration from an in-memory mapping (demo, tests, benchmarks)."""
    env = env or Environment(env={})
    sections = _validate(data, "the given settings")
    one = sections["one"]
    endpoint, endpoint_origin = resolve_endpoint(one["xmlrpc"], env)
    zmq, zmq_origin = resolve_zmq(one["zmq"], env)
    return Config(None, sections, endpoint, endpoint_origin,
                  resolve_auth_file(one["auth_file"], env), zmq, zmq_origin)


def read_session(auth_file: Path | None) -> str:
    """The ``user:password`` session from the ONE_AUTH file."""
    if auth_file is None:
        raise ConfigError("no ONE_AUTH file found: set one.auth_file in hookd.conf, $ONE_AUTH, "
                          "or create ~/.one/one_auth (user:password)")
    text = read_text_file(auth_file, "ONE_AUTH file").strip()
    value = text.splitlines()[0].strip() if text else None
    if value is None:
        raise ConfigError(f"ONE_AUTH file {auth_file} is empty")
    if ":" not in value:
        raise ConfigError(f"ONE_AUTH file {auth_file} must hold user:password on one line")
    return value
