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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd.errors import ConfigError

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


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _url(*schemes: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if str(value).startswith(schemes) else f"must start with {' or '.join(schemes)}"
    return check


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


_ID_OR_NAME = (int, str)

SCHEMA: dict[str, dict[str, F]] = {
    "one": {
        "xmlrpc": F((str,), None, _url("http://", "https://"), "XML-RPC endpoint"),
        "auth_file": F((str,), None, None, "file holding user:password"),
        "zmq": F((str,), None, _url("tcp://", "ipc://"), "oned's event stream (one_hm PUB)"),
        "connect_timeout": F((int, float), 5.0, _positive),
        "timeout": F((int, float), 30.0, _positive, "read timeout of every XML-RPC call"),
        "tls_verify": F((bool, str), True, None, "true, false, or a CA bundle path"),
        "page_size": F((int,), 2000, _positive, "objects per pool page"),
    },
    "kernels": {
        "kvm": F(_ID_OR_NAME, None, None, "KERNEL image (ID or name) for KVM"),
        "firecracker": F(_ID_OR_NAME, None, None, "KERNEL image for Firecracker"),
    },
    "initrds": {
        "kvm": F(_ID_OR_NAME, None, None, "RAMDISK image for KVM"),
        "firecracker": F(_ID_OR_NAME, None, None, "ignored by OpenNebula (#5382); warned"),
    },
    "kernel_cmdline": {
        "kvm": F((str,), "rw console=ttyS0"),
        "firecracker": F((str,), "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux "
                                 "i8042.nomux i8042.nopnp i8042.dumbkbd"),
    },
    "hypervisors": {
        "prefer": F((list,), ["lxc", "firecracker", "kvm"]),
        "pin": F((bool,), True),
        "datastores": F((dict,), {}, None, "datastore ID -> hypervisor override"),
        "clusters": F((dict,), {}, None, "cluster ID -> hypervisor override"),
    },
    "scope": {
        "datastores": F((list,), [], None, "only these image datastores (empty: all)"),
        "opt_attribute": F((str,), "HOOKD_MANAGE"),
    },
    "start_script": {
        "enabled": F((bool,), True),
        "policy": F((str,), "keep", _choice("keep", "append")),
        "context_env": F((bool,), False),
        "fallback": F((bool,), True, None, "start /one_entrypoint.sh when the registry fails"),
        "service_name": F((str,), "hookd-app"),
    },
    "registries": {
        "platform": F((str,), "linux/amd64"),
        "mirrors": F((dict,), {}, None, "registry host -> list of mirror URLs"),
        "credentials": F((dict,), {}, None, "registry host -> {username, password_file}"),
        "insecure": F((list,), [], None, "registries spoken to over plain HTTP"),
        "ca_bundle": F((str,), None),
        "timeout": F((int, float), 15.0, _positive),
        "cache_dir": F((str,), "/var/lib/hookd/oci-cache"),
        "docker_socket": F((str,), None),
    },
    "reconcile": {
        "workers": F((int,), 8, _positive),
        "sweep_interval": F((int, float), 600, _positive, "seconds between full sweeps"),
        "attempts": F((int,), 8, _positive, "attempts before a transient failure is an error"),
        "backoff_initial": F((int, float), 1.0, _positive),
        "backoff_max": F((int, float), 300.0, _positive),
        "shutdown_timeout": F((int, float), 20.0, _positive),
    },
    "events": {
        "heartbeat_interval": F((int, float), 5.0, _positive),
        "heartbeat_timeout": F((int, float), 15.0, _positive),
        "reconnect_initial": F((int, float), 0.1, _positive),
        "reconnect_max": F((int, float), 30.0, _positive),
        "max_message_bytes": F((int,), 4 * 1024 * 1024, _positive),
    },
    "ha": {
        "poll_interval": F((int, float), 5.0, _positive),
    },
    "log": {
        "level": F((str,), "info", _choice("debug", "info", "warning", "error")),
        "file": F((str,), None, None, "JSON lines file, e.g. /var/log/one/hookd.log"),
        "format": F((str,), "auto", _choice("auto", "json", "console")),
    },
    "metrics": {
        "listen": F((str,), None, None, "host:port of the Prometheus endpoint (loopback)"),
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


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
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
        if not isinstance(ds, int) or isinstance(ds, bool):
            raise ConfigError(f"scope.datastores in {where} must list numeric datastore IDs")
    for host, mirrors in sections["registries"]["mirrors"].items():
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise ConfigError(f"registries.mirrors.{host} in {where} must be a list of URLs")
    for host, creds in sections["registries"]["credentials"].items():
        if not isinstance(creds, dict) or set(creds) - {"username", "password_file"}:
            raise ConfigError(f"registries.credentials.{host} in {where} must be a mapping "
                              f"with username and password_file")


def _first_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
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
         required: bool = False) -> Config:
    """Load and validate. Without ``path`` the default file is read if it exists."""
    env = env or Environment()
    data: dict[str, Any] = {}
    used: Path | None = None
    if path is not None:
        data = _load_yaml(path)
        used = path
    elif DEFAULT_PATH.exists():
        data = _load_yaml(DEFAULT_PATH)
        used = DEFAULT_PATH
    elif required:
        raise ConfigError(f"configuration file {DEFAULT_PATH} does not exist")
    where = str(used) if used else "the built-in defaults"
    sections = _validate(data, where)
    one = sections["one"]
    endpoint, endpoint_origin = resolve_endpoint(one["xmlrpc"], env)
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"the XML-RPC endpoint {endpoint!r} (from {endpoint_origin}) must "
                          f"start with http:// or https://")
    zmq, zmq_origin = resolve_zmq(one["zmq"], env)
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
    value = _first_line(auth_file)
    if value is None:
        if not auth_file.exists():
            raise ConfigError(f"ONE_AUTH file {auth_file} does not exist")
        raise ConfigError(f"ONE_AUTH file {auth_file} is empty or unreadable")
    if ":" not in value:
        raise ConfigError(f"ONE_AUTH file {auth_file} must hold user:password on one line")
    return value
