"""hookd's configuration: a YAML file plus OpenNebula's own connection conventions.

Default file: ``/etc/one/hookd.conf`` (``--config`` overrides it). Every key is optional.
A key set in the file wins; otherwise OpenNebula's conventions apply, as the Ruby OCA
implements them (src/oca/ruby/opennebula/client.rb):

* endpoint: ``$ONE_XMLRPC``, ``~/.one/one_endpoint``, ``/var/lib/one/.one/one_endpoint``,
  ``http://localhost:2633/RPC2``;
* credentials: the file named by ``$ONE_AUTH``, ``~/.one/one_auth``,
  ``/var/lib/one/.one/one_auth`` (one line ``user:password``);
* event stream: ``$ONE_ZMQ``, ``tcp://localhost:2101``.

An unknown key or a value of the wrong type is a :class:`ConfigError` that names
the key and the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from handlers.errors import PermanentError


class ConfigError(PermanentError):
    """The configuration file or environment is wrong; the message names the key and the file."""


DEFAULT_PATH = Path("/etc/one/hookd.conf")
DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
DEFAULT_ZMQ = "tcp://localhost:2101"
ONEADMIN_HOME = Path("/var/lib/one")


# -- the schema ------------------------------------------------------------------------------
def setting(types: tuple[type, ...], default: Any = None,
            check: Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    """A configuration key: the YAML types it takes, its default, an optional check that
    returns a problem (or None), and what it is for. The dataclass field's annotation is
    the value's type as the daemon uses it."""
    metadata = {"types": types, "check": check, "doc": doc}
    if isinstance(default, (list, dict)):
        frozen = tuple(default) if isinstance(default, list) else dict(default)
        return field(default_factory=lambda: frozen, metadata={**metadata, "default": default})
    return field(default=default, metadata={**metadata, "default": default})


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


def _platform(value: Any) -> str | None:
    if re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", str(value)):
        return None
    return "must be os/architecture[/variant]"


def _text_line(value: Any) -> str | None:
    return None if not _CONTROL.search(str(value)) else "must not contain control characters"


_CONTROL = re.compile("[\x00-\x1f\x7f]")
_ID_OR_NAME = (int, str)

_HYPERVISORS = ("kvm", "qemu", "firecracker", "lxc", "lxd", "vcenter")


@dataclass(frozen=True)
class One:
    xmlrpc: str | None = setting((str,), None, _endpoint("http://", "https://"),
                                 "XML-RPC endpoint")
    auth_file: str | None = setting((str,), None, None, "file holding user:password")
    zmq: str | None = setting((str,), None, _endpoint("tcp://", "ipc://"),
                              "oned's event stream (one_hm PUB)")
    connect_timeout: float = setting((int, float), 5.0, _number(0, 300))
    timeout: float = setting((int, float), 30.0, _SHORT, "read timeout of every XML-RPC call")
    tls_verify: bool | str = setting((bool, str), True, _tls_verify,
                                     "true, false, or a CA bundle path")
    page_size: int = setting((int,), 2000, _count(2, 100_000), "objects per pool page")


@dataclass(frozen=True)
class Kernels:
    kvm: int | str | None = setting(_ID_OR_NAME, None, None, "KERNEL image (ID or name) for KVM")
    firecracker: int | str | None = setting(_ID_OR_NAME, None, None,
                                            "KERNEL image for Firecracker")
    owner: int | str = setting(_ID_OR_NAME, "oneadmin", None,
                               "a kernel or initrd given by name must belong to this user")

    def refs(self) -> dict[str, int | str | None]:
        """Hypervisor -> KERNEL image ID or name."""
        return {"kvm": self.kvm, "firecracker": self.firecracker}


@dataclass(frozen=True)
class Initrds:
    kvm: int | str | None = setting(_ID_OR_NAME, None, None, "RAMDISK image for KVM")
    firecracker: int | str | None = setting(_ID_OR_NAME, None, None,
                                            "ignored by OpenNebula (#5382); warned")

    def refs(self) -> dict[str, int | str | None]:
        return {"kvm": self.kvm, "firecracker": self.firecracker}


@dataclass(frozen=True)
class KernelCmdline:
    kvm: str = setting((str,), "rw console=tty0", _text_line)
    firecracker: str = setting((str,), "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux "
                                       "i8042.nomux i8042.nopnp i8042.dumbkbd", _text_line)


@dataclass(frozen=True)
class Hypervisors:
    prefer: tuple[str, ...] = setting((list,), ["lxc", "firecracker", "kvm"])
    pin: bool = setting((bool,), True)
    retarget: bool = setting((bool,), True, None,
                             "re-target the export's LXC template to KVM where only KVM runs")
    datastores: Mapping[int, str] = setting((dict,), {}, None,
                                            "datastore ID -> hypervisor override")
    clusters: Mapping[int, str] = setting((dict,), {}, None, "cluster ID -> hypervisor override")


@dataclass(frozen=True)
class Scope:
    datastores: tuple[int, ...] = setting((list,), [], None,
                                          "only these image datastores (empty: all)")
    opt_attribute: str = setting((str,), "HOOKD_MANAGE", _attribute_name)


@dataclass(frozen=True)
class StartScript:
    enabled: bool = setting((bool,), True)
    policy: Literal["keep", "append"] = setting((str,), "keep", _choice("keep", "append"))
    context_env: bool = setting((bool,), False)
    fallback: bool = setting((bool,), True, None,
                             "start /one_entrypoint.sh when the registry fails")
    service_name: str = setting((str,), "hookd-app", _service_name)


@dataclass(frozen=True)
class Registries:
    platform: str = setting((str,), "linux/amd64", _platform)
    mirrors: Mapping[str, tuple[str, ...]] = setting((dict,), {}, None,
                                                     "registry host -> list of mirror URLs")
    credentials: Mapping[str, Mapping[str, str]] = setting(
        (dict,), {}, None, "registry host -> {username, password_file}")
    insecure: tuple[str, ...] = setting((list,), [], None,
                                        "registries spoken to over plain HTTP")
    ca_bundle: str | None = setting((str,), None, _readable_file)
    timeout: float = setting((int, float), 15.0, _number(0, 600))
    cache_dir: str = setting((str,), "/var/lib/hookd/oci-cache")
    docker_socket: str | None = setting((str,), None)


@dataclass(frozen=True)
class Reconcile:
    workers: int = setting((int,), 8, _count(1, 256))
    sweep_interval: float = setting((int, float), 600, _number(0, 7 * 86400),
                                    "seconds between full sweeps")
    attempts: int = setting((int,), 8, _count(1, 1000),
                            "attempts before a transient failure is an error")
    backoff_initial: float = setting((int, float), 1.0, _SHORT)
    backoff_max: float = setting((int, float), 300.0, _SECONDS)
    shutdown_timeout: float = setting((int, float), 20.0, _SHORT)


@dataclass(frozen=True)
class Events:
    heartbeat_interval: float = setting((int, float), 5.0, _SHORT)
    heartbeat_timeout: float = setting((int, float), 15.0, _SHORT)
    reconnect_initial: float = setting((int, float), 0.1, _SHORT)
    reconnect_max: float = setting((int, float), 30.0, _SHORT)
    max_message_bytes: int = setting((int,), 4 * 1024 * 1024, _count(4096, 256 * 1024 * 1024))


@dataclass(frozen=True)
class Ha:
    poll_interval: float = setting((int, float), 5.0, _SHORT)


@dataclass(frozen=True)
class Log:
    level: Literal["debug", "info", "warning", "error"] = setting(
        (str,), "info", _choice("debug", "info", "warning", "error"))
    file: str | None = setting((str,), None, None, "JSON lines file, e.g. /var/log/one/hookd.log")
    format: Literal["auto", "json", "console"] = setting((str,), "auto",
                                                       _choice("auto", "json", "console"))


@dataclass(frozen=True)
class Metrics:
    listen: str | None = setting((str,), None, _host_port,
                                 "host:port of the Prometheus endpoint (loopback)")


#: The file's sections, in the order the README documents them.
SECTIONS: dict[str, type[Any]] = {
    "one": One, "kernels": Kernels, "initrds": Initrds, "kernel_cmdline": KernelCmdline,
    "hypervisors": Hypervisors, "scope": Scope, "start_script": StartScript,
    "registries": Registries, "reconcile": Reconcile, "events": Events, "ha": Ha, "log": Log,
    "metrics": Metrics,
}


def defaults(section: str) -> dict[str, Any]:
    """A section's keys and their defaults, as the file would spell them."""
    return {f.name: f.metadata["default"] for f in fields(SECTIONS[section])}


# -- the result --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """The validated configuration: one frozen value per section, and the connection as
    OpenNebula's conventions resolved it."""

    path: Path | None
    one: One
    kernels: Kernels
    initrds: Initrds
    kernel_cmdline: KernelCmdline
    hypervisors: Hypervisors
    scope: Scope
    start_script: StartScript
    registries: Registries
    reconcile: Reconcile
    events: Events
    ha: Ha
    log: Log
    metrics: Metrics
    xmlrpc: str
    xmlrpc_origin: str
    auth_file: Path | None
    zmq: str
    zmq_origin: str

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


def _validate(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every section of ``data`` checked against its dataclass; the sections' values."""
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section {section!r} in {where} (known: "
                              f"{', '.join(sorted(SECTIONS))})")
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section} in {where} must be a mapping")
        out[section] = _section(section, cls, given, where)
    _validate_semantics(out, where)
    return out


def _section(section: str, cls: type[Any], given: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in given:
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key} in {where} (known: "
                              f"{', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, spec in known.items():
        if key not in given or given[key] is None:
            continue
        value = given[key]
        types: tuple[type, ...] = spec.metadata["types"]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{section}.{key} in {where} must be {_type_names(types)}, not "
                              f"{value!r}")
        check = spec.metadata["check"]
        if check is not None and (problem := check(value)):
            raise ConfigError(f"{section}.{key} in {where} {problem}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


_HYPERVISORS = ("kvm", "qemu", "firecracker", "lxc", "lxd", "vcenter")


def _validate_semantics(sections: dict[str, Any], where: str) -> None:
    hypervisors: Hypervisors = sections["hypervisors"]
    registries: Registries = sections["registries"]
    for hv in hypervisors.prefer:
        if hv not in _HYPERVISORS:
            raise ConfigError(f"hypervisors.prefer in {where}: unknown hypervisor {hv!r} "
                              f"(known: {', '.join(_HYPERVISORS)})")
    for kind in ("datastores", "clusters"):
        mapping: Mapping[Any, Any] = getattr(hypervisors, kind)
        for key, hv in mapping.items():
            if not isinstance(key, int) or hv not in _HYPERVISORS:
                raise ConfigError(f"hypervisors.{kind} in {where}: entries must be "
                                  f"<numeric id>: <hypervisor>, got {key!r}: {hv!r}")
    for ds in sections["scope"].datastores:
        if not isinstance(ds, int) or isinstance(ds, bool) or ds < 0:
            raise ConfigError(f"scope.datastores in {where} must list numeric datastore IDs")
    for section in ("kernels", "initrds"):
        for key, ref in vars(sections[section]).items():
            if (isinstance(ref, int) and not isinstance(ref, bool) and ref < 0) or (
                    isinstance(ref, str) and (not ref.strip() or _CONTROL.search(ref))):
                raise ConfigError(f"{section}.{key} in {where} must be an image ID (0 or more) "
                                  f"or a name, not {ref!r}")
    check_url = _endpoint("http://", "https://")
    mirrors_of: dict[str, tuple[str, ...]] = {}
    for host, given in registries.mirrors.items():
        raw: object = given  # from YAML: a list, we hope
        if not isinstance(raw, (list, tuple)) or not all(isinstance(m, str) for m in raw):
            raise ConfigError(f"registries.mirrors.{host} in {where} must be a list of URLs")
        for mirror in raw:
            if (problem := check_url(mirror)) is not None:
                raise ConfigError(f"registries.mirrors.{host} in {where}: {mirror!r} {problem}")
        mirrors_of[str(host)] = tuple(raw)
    sections["registries"] = replace(registries, mirrors=mirrors_of)
    for host in registries.insecure:
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"registries.insecure in {where} must list registry hosts")
    for host, creds in registries.credentials.items():
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
    return _build(data, where, used, env, check_endpoints=True)


def from_mapping(data: Mapping[str, Any], *, env: Environment | None = None) -> Config:
    """Build a configuration from an in-memory mapping (demo, tests, benchmarks)."""
    return _build(data, "the given settings", None, env or Environment(env={}),
                  check_endpoints=False)


def _build(data: Mapping[str, Any], where: str, path: Path | None, env: Environment, *,
           check_endpoints: bool) -> Config:
    sections = _validate(data, where)
    one: One = sections["one"]
    endpoint, endpoint_origin = resolve_endpoint(one.xmlrpc, env)
    zmq, zmq_origin = resolve_zmq(one.zmq, env)
    if check_endpoints:
        if (problem := _endpoint("http://", "https://")(endpoint)) is not None:
            raise ConfigError(f"the XML-RPC endpoint {endpoint!r} (from {endpoint_origin}) "
                              f"{problem}")
        if (problem := _endpoint("tcp://", "ipc://")(zmq)) is not None:
            raise ConfigError(f"the event stream {zmq!r} (from {zmq_origin}) {problem}")
    return Config(path=path, **sections, xmlrpc=endpoint, xmlrpc_origin=endpoint_origin,
                  auth_file=resolve_auth_file(one.auth_file, env), zmq=zmq,
                  zmq_origin=zmq_origin)


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
