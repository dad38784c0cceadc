"""pytest fixtures for tests that need an OpenNebula front-end.

Enable with ``pytest_plugins = ["hookd.testing.pytest_plugin"]`` in a ``conftest.py``.

* ``simulator``: an in-process 6.8 simulator on free loopback ports, stopped afterwards;
* ``simulator_74``: the same in the 7.x flavour;
* ``simulator_process``: ``python -m hookd.testing`` in its own process, yielding a
  :class:`~hookd.testing.client.SimulatorClient` (``.xmlrpc_url``, ``.zmq_url``,
  ``.controls``...); the process is terminated after the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookd.testing.client import SimulatorClient
from hookd.testing.processes import stop_process
from hookd.testing.simulator import Simulator

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A started 6.8-flavour simulator (seeded)."""
    sim = Simulator(one_version="6.8").start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def simulator_74() -> Iterator[Simulator]:
    """A started 7.4-flavour simulator (seeded)."""
    sim = Simulator(one_version="7.4").start()
    try:
        yield sim
    finally:
        sim.stop()


class StandaloneSimulator:
    """A ``python -m hookd.testing`` process and the line it printed."""

    def __init__(self, args: list[str], timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        # stderr goes to a file: a pipe nobody reads would block a chatty simulator.
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in terminate()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookd.testing", *args],
            stdout=subprocess.PIPE, stderr=self.stderr_file, env=env,
        )
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError("no stdout pipe")
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(stdout.readline().decode()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        self.banner = lines[0].strip() if lines else ""
        self.trailing_output = ""
        if not self.banner.startswith("hookd-simulator listening "):
            self.terminate()
            raise RuntimeError(f"standalone simulator did not start: {self.banner!r}")
        fields = dict(part.split("=", 1) for part in self.banner.split()[2:])
        self.xmlrpc_url = fields["xmlrpc"]
        self.zmq_url = fields["zmq"]

    def terminate(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM), SIGKILL if it does not exit; return the exit status."""
        stop_process(self.process, timeout, sig)
        stdout = self.process.stdout
        self.trailing_output = stdout.read().decode() if stdout is not None else ""
        if stdout is not None:
            stdout.close()
        self.stderr_file.seek(0)
        self.stderr_output = self.stderr_file.read().decode(errors="replace")
        self.stderr_file.close()
        return self.process.returncode


@pytest.fixture
def simulator_process() -> Iterator[SimulatorClient]:
    """The standalone simulator in its own process, controlled remotely."""
    standalone = StandaloneSimulator(["--xmlrpc", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:0"])
    try:
        yield SimulatorClient(standalone.xmlrpc_url)
    finally:
        standalone.terminate()
