"""hookd's configuration: a YAML file plus OpenNebula's own connection conventions.

Default file: ``/etc/one/hookd.conf`` (``--config`` overrides it); the README's
"Configuration" section lists every key. A key set in the file wins; otherwise the endpoint,
the credentials and the event stream follow OpenNebula's conventions as the Ruby OCA
implements them (src/oca/ruby/opennebula/client.rb). Each section is a frozen dataclass: a
field's type, with the check ``Annotated`` attaches to it, is what the file may hold there.
A wrong key or value is a :class:`ConfigError` that names the key and the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from functools import cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from handlers.errors import PermanentError


class ConfigError(PermanentError):
    """The configuration file or environment is wrong; the message names the key and the file."""


DEFAULT_PATH = Path("/etc/one/hookd.conf")
DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
DEFAULT_ZMQ = "tcp://localhost:2101"
ONEADMIN_HOME = Path("/var/lib/one")

#: A value's problem ("must be ..."), or None.
Check = Callable[[Any], str | None]


# -- the checks: each runs on a value of the field's type --------------------------------------
def _must(ok: Callable[[Any], object], problem: str) -> Check:
    return lambda value: None if ok(value) else problem


def _number(low: float, high: float) -> Check:
    """A number in (low, high]: ``.inf``, ``.nan`` (no comparison holds for it) and values
    whose milliseconds overflow a C int (ZeroMQ options) never reach the daemon."""
    return _must(lambda value: low < value <= high, f"must be a number in ({low:g}, {high:g}]")


def _count(low: int, high: int) -> Check:
    return _must(lambda value: low <= value <= high, f"must be from {low} to {high}")


def _choice(choices: tuple[str, ...]) -> Check:
    return _must(lambda value: value in choices, f"must be one of {', '.join(choices)}")


def _endpoint(*schemes: str) -> Check:
    """A URL with one of ``schemes``, a host and, if given, a port in 1..65535."""
    def check(text: str) -> str | None:
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


_HTTP = _endpoint("http://", "https://")
_ZMQ = _endpoint("tcp://", "ipc://")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_HYPERVISORS = ("kvm", "qemu", "firecracker", "lxc", "lxd", "vcenter")

_attribute_name = _must(lambda name: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name),
                        "must be a template attribute name (letters, digits, _)")
_platform = _must(lambda text: re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", text),
                  "must be os/architecture[/variant]")
_text_line = _must(lambda text: not _CONTROL.search(text), "must not contain control characters")
_datastore_ids = _must(lambda ids: all(isinstance(ds, int) and not isinstance(ds, bool)
                                       and ds >= 0 for ds in ids),
                       "must list numeric datastore IDs")
_hosts = _must(lambda hosts: all(isinstance(host, str) and host.strip() for host in hosts),
               "must list registry hosts")


def _host_port(text: str) -> str | None:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be host:port (e.g. 127.0.0.1:9925)"
    return None


def _service_name(name: str) -> str | None:
    from handlers.start_script import StartScriptError, StartScriptOptions

    try:
        StartScriptOptions(name=name)
    except StartScriptError as exc:
        return f"is not usable: {exc.reason}"
    return None


def _readable_file(name: str) -> str | None:
    path = Path(name)
    try:
        if not path.is_file():
            return f"{name}: {'is not a regular file' if path.exists() else 'does not exist'}"
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"{name}: {exc.strerror or exc}"
    return None


def _tls_verify(value: bool | str) -> str | None:
    return None if isinstance(value, bool) else _readable_file(value)


def _image_ref(ref: int | str) -> str | None:
    if (isinstance(ref, int) and ref < 0) or (
            isinstance(ref, str) and (not ref.strip() or _CONTROL.search(ref))):
        return f"must be an image ID (0 or more) or a name, not {ref!r}"
    return None


Seconds = Annotated[float, _number(0, 86400)]  # any duration: more than 0, at most a day
Short = Annotated[float, _number(0, 3600)]  # timeouts and intervals of a connection
ImageRef = Annotated[int | str | None, _image_ref]
Cmdline = Annotated[str, _text_line]


# -- the sections, in the order the README documents them --------------------------------------
@dataclass(frozen=True)
class One:
    xmlrpc: Annotated[str | None, _HTTP] = None
    auth_file: str | None = None
    zmq: Annotated[str | None, _ZMQ] = None
    connect_timeout: Annotated[float, _number(0, 300)] = 5.0
    timeout: Short = 30.0
    tls_verify: Annotated[bool | str, _tls_verify] = True
    page_size: Annotated[int, _count(2, 100_000)] = 2000


@dataclass(frozen=True)
class Initrds:
    kvm: ImageRef = None
    firecracker: ImageRef = None

    def refs(self) -> dict[str, int | str | None]:
        """Hypervisor -> image ID or name."""
        return {"kvm": self.kvm, "firecracker": self.firecracker}


@dataclass(frozen=True)
class Kernels(Initrds):
    owner: Annotated[int | str, _image_ref] = "oneadmin"


@dataclass(frozen=True)
class KernelCmdline:
    kvm: Cmdline = "rw console=tty0"
    firecracker: Cmdline = ("console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux "
                            "i8042.nopnp i8042.dumbkbd")


@dataclass(frozen=True)
class Hypervisors:
    prefer: tuple[str, ...] = ("lxc", "firecracker", "kvm")
    pin: bool = True
    retarget: bool = True
    datastores: Mapping[int, str] = field(default_factory=dict)
    clusters: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    datastores: Annotated[tuple[int, ...], _datastore_ids] = ()
    opt_attribute: Annotated[str, _attribute_name] = "HOOKD_MANAGE"


@dataclass(frozen=True)
class StartScript:
    enabled: bool = True
    policy: Literal["keep", "append"] = "keep"
    context_env: bool = False
    fallback: bool = True
    service_name: Annotated[str, _service_name] = "hookd-app"


@dataclass(frozen=True)
class Registries:
    platform: Annotated[str, _platform] = "linux/amd64"
    mirrors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    insecure: Annotated[tuple[str, ...], _hosts] = ()
    ca_bundle: Annotated[str | None, _readable_file] = None
    timeout: Annotated[float, _number(0, 600)] = 15.0
    cache_dir: str = "/var/lib/hookd/oci-cache"
    docker_socket: str | None = None


@dataclass(frozen=True)
class Reconcile:
    workers: Annotated[int, _count(1, 256)] = 8
    sweep_interval: Annotated[float, _number(0, 7 * 86400)] = 600
    attempts: Annotated[int, _count(1, 1000)] = 8
    backoff_initial: Short = 1.0
    backoff_max: Seconds = 300.0
    shutdown_timeout: Short = 20.0


@dataclass(frozen=True)
class Events:
    heartbeat_interval: Short = 5.0
    heartbeat_timeout: Short = 15.0
    reconnect_initial: Short = 0.1
    reconnect_max: Short = 30.0
    max_message_bytes: Annotated[int, _count(4096, 256 * 1024 * 1024)] = 4 * 1024 * 1024


@dataclass(frozen=True)
class Ha:
    poll_interval: Short = 5.0


@dataclass(frozen=True)
class Log:
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str | None = None
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class Metrics:
    listen: Annotated[str | None, _host_port] = None


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


#: The file's sections, in the order the README documents them.
SECTIONS: dict[str, type[Any]] = {key: hint for key, hint in get_type_hints(Config).items()
                                   if isinstance(hint, type) and is_dataclass(hint)}


@dataclass(frozen=True)
class Environment:
    """What the conventions read; injectable for tests."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path | None = None
    oneadmin_home: Path = ONEADMIN_HOME

    def dot_one(self, name: str) -> tuple[Path, Path]:
        """``~/.one/<name>``, then oneadmin's."""
        home = self.home if self.home is not None else Path.home()
        return home / ".one" / name, self.oneadmin_home / ".one" / name


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


# -- the loader --------------------------------------------------------------------------------
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
               list: "a list", dict: "a mapping"}
#: What YAML gives for a field's type (and its origin: tuple[int, ...] -> tuple) when not itself.
_YAML_TYPES: dict[Any, tuple[type, ...]] = {float: (int, float), tuple: (list,),
                                            Mapping: (dict,)}


@cache
def _schema(section: str) -> dict[str, tuple[tuple[type, ...], list[Check]]]:
    """Each key of a section: the YAML types it takes and the checks of its value."""
    schema = {}
    for key, annotation in get_type_hints(SECTIONS[section], include_extras=True).items():
        annotated = get_origin(annotation) is Annotated
        hint, *checks = get_args(annotation) if annotated else (annotation,)
        if get_origin(hint) is Literal:
            hint, checks = str, [_choice(get_args(hint)), *checks]
        members = [get_origin(t) or t for t in
                   (get_args(hint) if isinstance(hint, UnionType) else (hint,))]
        types = tuple(y for t in members if t is not NoneType for y in _YAML_TYPES.get(t, (t,)))
        schema[key] = (types, checks)
    return schema


def _section(section: str, given: Mapping[str, Any], where: str) -> Any:
    schema = _schema(section)
    for key in given:
        if key not in schema:
            raise ConfigError(f"unknown key {section}.{key} in {where} (known: "
                              f"{', '.join(sorted(schema))})")
    values: dict[str, Any] = {}
    for key, (types, checks) in schema.items():
        value = given.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(f"{section}.{key} in {where} must be {names}, not {value!r}")
        for check in checks:
            if problem := check(value):
                raise ConfigError(f"{section}.{key} in {where} {problem}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return SECTIONS[section](**values)


def _validate(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every section of ``data`` checked against its dataclass; the sections' values."""
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section {section!r} in {where} (known: "
                              f"{', '.join(sorted(SECTIONS))})")
    out: dict[str, Any] = {}
    for section in SECTIONS:
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section} in {where} must be a mapping")
        out[section] = _section(section, given, where)
    _check_entries(out, where)
    return out


def _check_entries(sections: dict[str, Any], where: str) -> None:
    """Hypervisor names and the registries' mirrors and credentials, entry by entry; the
    password files must hold a password."""
    hypervisors: Hypervisors = sections["hypervisors"]
    registries: Registries = sections["registries"]
    for hv in hypervisors.prefer:
        if hv not in _HYPERVISORS:
            raise ConfigError(f"hypervisors.prefer in {where}: unknown hypervisor {hv!r} "
                              f"(known: {', '.join(_HYPERVISORS)})")
    for kind in ("datastores", "clusters"):
        for key, hv in getattr(hypervisors, kind).items():
            if not isinstance(key, int) or hv not in _HYPERVISORS:
                raise ConfigError(f"hypervisors.{kind} in {where}: entries must be "
                                  f"<numeric id>: <hypervisor>, got {key!r}: {hv!r}")
    mirrors_of: dict[str, tuple[str, ...]] = {}
    for host, given in registries.mirrors.items():
        name = f"registries.mirrors.{host}"
        if not isinstance(given, (list, tuple)) or not all(isinstance(m, str) for m in given):
            raise ConfigError(f"{name} in {where} must be a list of URLs")
        for mirror in given:
            if (problem := _HTTP(mirror)) is not None:
                raise ConfigError(f"{name} in {where}: {mirror!r} {problem}")
        mirrors_of[str(host)] = tuple(given)
    for host, creds in registries.credentials.items():
        name = f"registries.credentials.{host}"
        if not isinstance(creds, dict) or set(creds) != {"username", "password_file"}:
            raise ConfigError(f"{name} in {where} must be a mapping with username and "
                              f"password_file")
        username, password_file = creds["username"], creds["password_file"]
        if not isinstance(username, str) or not username.strip():
            raise ConfigError(f"{name}.username in {where} must be a user name")
        if not isinstance(password_file, str) or not password_file:
            raise ConfigError(f"{name}.password_file in {where} must be a file name")
        if not read_text_file(Path(password_file), f"{name}.password_file").strip():
            raise ConfigError(f"{name}.password_file {password_file} is empty")
    sections["registries"] = replace(registries, mirrors=mirrors_of)


# -- OpenNebula's conventions ----------------------------------------------------------------
def _first_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text.splitlines()[0].strip() if text else None


def _resolve(one: One, key: str, var: str, env: Environment, default: str,
             file: str | None = None) -> tuple[str, str]:
    """``one.<key>`` from the file, else ``$<var>``, else the first line of ``file`` in
    ``~/.one`` or oneadmin's, else ``default``; and where the value came from."""
    if configured := getattr(one, key):
        return configured, f"hookd.conf one.{key}"
    if env.env.get(var):
        return env.env[var], f"${var}"
    for candidate in env.dot_one(file) if file else ():
        if value := _first_line(candidate):
            return value, str(candidate)
    return default, "default"


def _resolve_auth_file(configured: str | None, env: Environment) -> Path | None:
    if configured:
        return Path(configured)
    if env.env.get("ONE_AUTH"):
        return Path(env.env["ONE_AUTH"])
    return next((p for p in env.dot_one("one_auth") if p.exists()), None)


def load(path: Path | None = None, *, env: Environment | None = None,
         reload: bool = False) -> Config:
    """Load and validate. Without ``path`` the default file is read if it exists.

    ``reload``: the running daemon re-reads its file (SIGHUP); an empty file is refused.
    """
    if path is None and DEFAULT_PATH.exists():
        path = DEFAULT_PATH
    data = _load_yaml(path, reload=reload) if path is not None else {}
    where = str(path) if path is not None else "the built-in defaults"
    return _build(data, where, path, env or Environment(), check_endpoints=True)


def from_mapping(data: Mapping[str, Any], *, env: Environment | None = None) -> Config:
    """Build a configuration from an in-memory mapping (demo, tests, benchmarks)."""
    return _build(data, "the given settings", None, env or Environment(env={}),
                  check_endpoints=False)


def _build(data: Mapping[str, Any], where: str, path: Path | None, env: Environment, *,
           check_endpoints: bool) -> Config:
    sections = _validate(data, where)
    one: One = sections["one"]
    endpoint, endpoint_origin = _resolve(one, "xmlrpc", "ONE_XMLRPC", env, DEFAULT_ENDPOINT,
                                         "one_endpoint")
    zmq, zmq_origin = _resolve(one, "zmq", "ONE_ZMQ", env, DEFAULT_ZMQ)
    if check_endpoints:
        if (problem := _HTTP(endpoint)) is not None:
            raise ConfigError(f"the XML-RPC endpoint {endpoint!r} (from {endpoint_origin}) "
                              f"{problem}")
        if (problem := _ZMQ(zmq)) is not None:
            raise ConfigError(f"the event stream {zmq!r} (from {zmq_origin}) {problem}")
    return Config(path=path, **sections, xmlrpc=endpoint, xmlrpc_origin=endpoint_origin,
                  auth_file=_resolve_auth_file(one.auth_file, env), zmq=zmq,
                  zmq_origin=zmq_origin)


def read_session(auth_file: Path | None) -> str:
    """The ``user:password`` session from the ONE_AUTH file."""
    if auth_file is None:
        raise ConfigError("no ONE_AUTH file found: set one.auth_file in hookd.conf, $ONE_AUTH, "
                          "or create ~/.one/one_auth (user:password)")
    text = read_text_file(auth_file, "ONE_AUTH file").strip()
    if not text:
        raise ConfigError(f"ONE_AUTH file {auth_file} is empty")
    value = text.splitlines()[0].strip()
    if ":" not in value:
        raise ConfigError(f"ONE_AUTH file {auth_file} must hold user:password on one line")
    return value
