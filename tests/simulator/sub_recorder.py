"""A ZeroMQ subscriber in its own process, for conformance tests.

Usage: ``python sub_recorder.py --endpoint tcp://... --subscribe <hex prefix> ...
--probe <hex prefix>``. Prints ``PROBE`` the first time a probe message arrives, one JSON
line per other message (``{"key": <hex>, "content": <base64 text>, "frames": n}``), and
exits when ``stop`` arrives on standard input.
"""

from __future__ import annotations

import argparse
import json
import sys

import zmq


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--subscribe", action="append", default=[])
    parser.add_argument("--probe", required=True)
    args = parser.parse_args()
    probe = bytes.fromhex(args.probe)
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    for prefix in [*args.subscribe, args.probe]:
        socket.setsockopt(zmq.SUBSCRIBE, bytes.fromhex(prefix))
    socket.connect(args.endpoint)
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    probed = False
    running = True
    while running:
        for item, _event in poller.poll(1000):
            if item is socket:
                frames = socket.recv_multipart()
                if frames[0].startswith(probe):
                    if not probed:
                        probed = True
                        print("PROBE", flush=True)
                    continue
                record = {"key": frames[0].hex(), "content": frames[1].decode("ascii"),
                          "frames": len(frames)}
                print(json.dumps(record), flush=True)
            else:
                line = sys.stdin.readline()
                if not line or line.strip() == "stop":
                    running = False
    # Drain what is still in flight before exiting.
    while socket.poll(300):
        frames = socket.recv_multipart()
        if not frames[0].startswith(probe):
            record = {"key": frames[0].hex(), "content": frames[1].decode("ascii"),
                      "frames": len(frames)}
            print(json.dumps(record), flush=True)
    socket.close(0)
    context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
