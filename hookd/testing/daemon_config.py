"""hookd's configuration for running it against the simulator (tests and benchmarks).

Only what a simulator run must set is written: the endpoints, a ONE_AUTH file, the seeded
kernels and, with a fake registry, Docker Hub mirrored by it. Everything else stays at
hookd's production defaults unless a caller passes sections to merge on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hookd.testing.registry import FakeRegistry

SEEDED_KERNELS = {"kvm": "kernel-kvm", "firecracker": "kernel-firecracker"}


def auth_file(directory: Path, session: str) -> Path:
    """A ONE_AUTH file as oneadmin has it (mode 0600)."""
    path = directory / "one_auth"
    path.write_text(session + "\n")
    path.chmod(0o600)
    return path


def simulator_config(directory: Path, *, xmlrpc: str, zmq: str, session: str,
                     registry: FakeRegistry | str | None,
                     kernels: Mapping[str, Any] | None = None,
                     **sections: Mapping[str, Any]) -> dict[str, Any]:
    """hookd's configuration as a mapping. ``registry`` is a fake registry or its
    ``host:port``; ``kernels`` defaults to the seeded kernels by name; ``sections`` are
    merged on top, key by key."""
    config: dict[str, Any] = {
        "one": {"xmlrpc": xmlrpc, "zmq": zmq, "auth_file": str(auth_file(directory, session))},
        "kernels": dict(kernels if kernels is not None else SEEDED_KERNELS),
    }
    if registry is not None:
        host = registry if isinstance(registry, str) else registry.host
        config["registries"] = {"mirrors": {"docker.io": [f"http://{host}"]},
                                "insecure": [host],
                                "cache_dir": str(directory / "oci-cache")}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
