"""The standalone simulator: ``python -m hookd.testing``, on loopback only.

Prints exactly one line once both endpoints listen, for example (one line)::

    hookd-simulator listening xmlrpc=http://127.0.0.1:2633/RPC2
        zmq=tcp://127.0.0.1:2101 one_version=6.8.3

and stops cleanly on SIGTERM or SIGINT (the publisher child is reaped, exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from hookd.testing.netutil import loopback_host_port, loopback_zmq_endpoint
from hookd.testing.simulator import Simulator


def add_endpoint_options(parser: argparse.ArgumentParser, *, xmlrpc: str, zmq: str) -> None:
    """The options every standalone simulator takes: where it listens and how oned behaves."""
    parser.add_argument("--xmlrpc", default=xmlrpc, help="HOST:PORT (loopback)")
    parser.add_argument("--zmq", default=zmq, help="tcp://HOST:PORT")
    parser.add_argument("--auth", default="oneadmin:opennebula", help="USER:PASSWORD of user 0")
    parser.add_argument("--one-version", default="6.8", choices=("6.8", "7.4"))
    parser.add_argument("--ready-delay", type=float, default=0.05, help="seconds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hookd.testing",
        description="Simulated OpenNebula front-end (oned XML-RPC + hook manager ZeroMQ).",
    )
    add_endpoint_options(parser, xmlrpc="127.0.0.1:2633", zmq="tcp://127.0.0.1:2101")
    parser.add_argument("--registry", default="localhost:5000", help="HOST:PORT")
    parser.add_argument("--datastore-dir", default=None, help="copy local images here")
    parser.add_argument("--no-seed", action="store_true", help="bootstrap objects only")
    return parser


def serve(prog: str, args: argparse.Namespace, make: Callable[[], Simulator], *,
          banner_extra: str = "", cleanup: Iterable[Callable[[], None]] = ()) -> int:
    """Run a simulator built by ``make`` on the endpoints in ``args`` until SIGTERM/SIGINT.

    Endpoints are checked to be loopback before anything starts (exit 2); a failure to bind
    exits 1; the banner line is printed once both endpoints listen. ``cleanup`` runs on every
    way out, after the simulator stopped.
    """
    try:
        try:
            loopback_host_port(args.xmlrpc)
            loopback_zmq_endpoint(args.zmq)
        except ValueError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        stop = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        sim = make()
        try:
            try:
                sim.start(xmlrpc=args.xmlrpc, zmq=args.zmq)
            except (OSError, RuntimeError) as exc:
                print(f"{prog}: cannot start: {exc}", file=sys.stderr)
                return 1
            sys.stdout.write(
                f"hookd-simulator listening xmlrpc={sim.xmlrpc_url} zmq={sim.zmq_url} "
                f"one_version={sim.flavour.version}{banner_extra}\n")
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            sim.stop()
        return 0
    finally:
        for action in cleanup:
            action()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return serve("hookd-simulator", args, lambda: Simulator(
        one_version=args.one_version,
        auth=args.auth,
        ready_delay=args.ready_delay,
        registry=args.registry,
        seed=not args.no_seed,
        datastore_dir=args.datastore_dir,
    ))


if __name__ == "__main__":
    sys.exit(main())
