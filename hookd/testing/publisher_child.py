"""The hook manager driver process: reads base64 HOOK_MESSAGEs, publishes them on ZeroMQ.

oned runs its hook manager driver (``one_hm``, ``src/hm_mad/one_hm.rb``) as a child
process and writes one base64 message per line to it; the driver binds a ZeroMQ PUB
socket and publishes each message once per key as a two-frame message (key, original
base64 text). This module is that child: ``python -m hookd.testing.publisher_child
--bind tcp://127.0.0.1:PORT``. It prints ``READY <endpoint>`` once bound and exits when
its standard input closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import zmq

from hookd.testing.events import keys_for
from hookd.testing.netutil import loopback_zmq_endpoint


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hookd.testing.publisher_child")
    parser.add_argument("--bind", required=True)
    args = parser.parse_args(argv)
    endpoint = loopback_zmq_endpoint(args.bind)
    signal.signal(signal.SIGTERM, _stop)
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.bind(endpoint.replace(":0", ":*") if endpoint.endswith(":0") else endpoint)
        bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        sys.stdout.write(f"READY {bound}\n")
        sys.stdout.flush()
        for raw in sys.stdin.buffer:
            message = raw.strip()
            if not message:
                continue
            for key in keys_for(message.decode("ascii")):
                socket.send_multipart([f"EVENT {key}".encode(), message])
    except zmq.ZMQError as exc:
        sys.stderr.write(f"ERROR: Failed to bind publisher socket {endpoint}: {exc}\n")
        return 1
    finally:
        socket.close(0)
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
