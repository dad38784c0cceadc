"""A simulated OpenNebula front-end for hookd's tests, demo and benchmarks.

It speaks oned's XML-RPC API over HTTP (``/RPC2``, the bytes xmlrpc-c/Abyss sends) and
publishes the hook manager's ZeroMQ event stream from a child process, reproducing oned
6.8.3 (and a 7.4 flavour) as read in OpenNebula's sources and as recorded from a real
oned. It imports nothing from the rest of ``hookd``.

In-process::

    from hookd.testing import Simulator
    with Simulator(one_version="6.8", ready_delay=0.05) as sim:   # starts on free ports
        image_id, template_id = sim.export_app(app_id, datastore_id)
        sim.wait_image_state(image_id, "READY", timeout=5)
        sim.controls.fail_next("one.image.update", "locked")

In another process: ``python -m hookd.testing --xmlrpc 127.0.0.1:0 --zmq tcp://127.0.0.1:0``
prints where it listens; ``SimulatorClient(xmlrpc_url)`` drives it remotely (``sim.*``
XML-RPC namespace). pytest: ``pytest_plugins = ["hookd.testing.pytest_plugin"]`` gives the
``simulator``, ``simulator_74`` and ``simulator_process`` fixtures.

Module map: ``template_lang`` (template parser, merge, XML), ``objects`` (object XML),
``world`` (pools, lock, scheduler), ``oned`` + ``rm_*`` (API calls), ``image_manager`` +
``ds_driver`` (image life-cycle), ``events`` + ``publisher`` + ``publisher_child`` (hook
manager and ZeroMQ), ``xmlrpc_protocol`` + ``xmlrpc_server`` (wire format), ``export``
(``onemarketapp export``), ``seed`` + ``builders`` (scenarios), ``controls`` + ``sim_rpc`` +
``client`` (test controls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookd.testing.client import SimulatorClient
    from hookd.testing.simulator import Simulator

__all__ = ["Simulator", "SimulatorClient"]


def __getattr__(name: str) -> Any:
    # Lazy: the publisher child imports hookd.testing.* and must start fast.
    if name == "Simulator":
        from hookd.testing.simulator import Simulator

        return Simulator
    if name == "SimulatorClient":
        from hookd.testing.client import SimulatorClient

        return SimulatorClient
    raise AttributeError(name)
