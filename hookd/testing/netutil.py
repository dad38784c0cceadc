"""Address parsing that refuses anything but loopback (the simulator never listens wider)."""

from __future__ import annotations

import ipaddress


def _check_loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise ValueError(
            f"{host!r} is not an IP address; the simulator binds loopback only"
        ) from exc
    if not address.is_loopback:
        raise ValueError(f"{host} is not a loopback address; the simulator binds loopback only")
    return host.strip("[]")


def loopback_host_port(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (port 0 picks a free port) and insist on loopback."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {value!r}")
    return _check_loopback(host), port


def loopback_zmq_endpoint(value: str) -> str:
    """Validate ``tcp://HOST:PORT`` (port 0 or ``*`` picks a free port) on loopback."""
    if not value.startswith("tcp://"):
        raise ValueError(f"expected tcp://HOST:PORT, got {value!r}")
    rest = value[len("tcp://") :]
    host, sep, port_text = rest.rpartition(":")
    if not sep or not (port_text.isdigit() or port_text == "*"):
        raise ValueError(f"expected tcp://HOST:PORT, got {value!r}")
    host = _check_loopback(host)
    port = "0" if port_text == "*" else port_text
    return f"tcp://{host}:{port}"
