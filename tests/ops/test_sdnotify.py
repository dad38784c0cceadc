"""sd_notify: datagrams on a stand-in notify socket, the watchdog cadence, no-op without systemd."""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hookd.sdnotify import Notifier, WatchdogPinger, clean_status
from tests.ops.conftest import NotifySocket


def test_ready_status_reloading_stopping_reach_the_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier()
    assert notifier.address is not None

    assert notifier.ready("active: 3 container images")
    assert notify_socket.receive() == b"READY=1\nSTATUS=active: 3 container images"

    assert notifier.status("sweeping (periodic)")
    assert notify_socket.receive() == b"STATUS=sweeping (periodic)"

    assert notifier.reloading()
    reloading = notify_socket.receive().decode()
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading), reloading
    usec = int(reloading.rsplit("=", 1)[1])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000

    assert WatchdogPinger(notifier, 1.0).maybe_ping()
    assert notify_socket.receive() == b"WATCHDOG=1"

    assert notifier.stopping("draining 2 reconciles")
    assert notify_socket.receive() == b"STOPPING=1\nSTATUS=draining 2 reconciles"

    # The constructor takes the variable's spelling too ("/path" or "@name").
    direct = Notifier({"NOTIFY_SOCKET": notify_socket.env_value})
    assert direct.ready()
    assert notify_socket.receive() == b"READY=1"


def test_status_is_one_clean_line(notify_socket: NotifySocket) -> None:
    notifier = Notifier()
    # A newline must not smuggle a second assignment (READY=1) into the datagram.
    assert notifier.status("waiting for oned\nREADY=1\r\n\tat \x1b[31mhttp://x\x00\x7f\u0085 é")
    assert notify_socket.receive() == "STATUS=waiting for oned READY=1 at [31mhttp://x é".encode()


def test_status_is_cut_at_a_character_boundary() -> None:
    text = "é" * 1000  # 2000 bytes in UTF-8
    cleaned = clean_status(text, max_bytes=101)
    assert cleaned == "é" * 50
    assert len(cleaned.encode()) <= 101
    assert clean_status("  a \n\n b  ") == "a b"


def test_unset_notify_socket_is_a_silent_no_op(no_systemd_env: None) -> None:
    notifier = Notifier()
    assert notifier.address is None
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert WatchdogPinger(notifier, 1.0).maybe_ping() is False
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "relative/notify.sock", "@", "vsock:2:1234"])
def test_unusable_notify_socket_values_disable_notifications(value: str) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": value})
    assert notifier.address is None
    assert notifier.ready() is False


def test_send_failure_returns_false_then_recovers(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert notifier.address is not None
    assert notifier.ready("x") is False  # never raises
    # Once systemd's socket is there, the same notifier works.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "absent.sock"))
        assert notifier.ready("x") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=x"


def test_a_peer_that_went_away_is_reported_not_raised(notify_socket: NotifySocket) -> None:
    notifier = Notifier()
    assert notifier.status("one")
    notify_socket.receive()
    notify_socket.sock.close()
    if notify_socket.env_value.startswith("/"):
        os.unlink(notify_socket.env_value)
    assert notifier.status("two") is False


# -- watchdog interval -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),  # the watchdog is for another process (our parent)
        (None, None, None),  # WatchdogSec= not set
        ("0", None, None),
        ("garbage", None, None),
        ("-5", None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_our_pid(
    usec: str | None, pid: str | None, expected: float | None
) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getppid())
    assert Notifier(env).watchdog_interval() == expected


def test_watchdog_pid_of_another_process_sends_no_pings(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))
    assert Notifier().watchdog_interval() is None
    assert notify_socket.nothing_within(0.1)


def test_a_forked_child_inherits_an_environment_that_does_not_ping(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent's WATCHDOG_PID reaches a child process: the child must not keep pinging.
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    code = (
        "from hookd.sdnotify import Notifier\n"
        "print(Notifier().watchdog_interval())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["None"]
    assert notify_socket.nothing_within(0.05)
    # ...while in this (the main) process the same environment enables it.
    assert Notifier().watchdog_interval() == 0.05


# -- the pinger ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pinger_cadence_with_a_fake_clock(notify_socket: NotifySocket) -> None:
    clock = FakeClock()
    pinger = WatchdogPinger(Notifier(), 15.0, clock=clock)
    sent = []
    for _ in range(61):  # one minute, a main-loop turn per second
        if pinger.maybe_ping():
            sent.append(clock.now)
        clock.now += 1.0
    assert sent == [1000.0, 1015.0, 1030.0, 1045.0, 1060.0]
    assert [notify_socket.receive() for _ in sent] == [b"WATCHDOG=1"] * 5
    assert notify_socket.nothing_within(0.05)


def test_pinger_retries_after_a_failed_send(tmp_path: Path) -> None:
    clock = FakeClock()
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "not-yet.sock")})
    pinger = WatchdogPinger(notifier, 10.0, clock=clock)
    assert pinger.maybe_ping() is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "not-yet.sock"))
        assert pinger.maybe_ping() is True  # still due: retried on the next turn
        assert server.recv(4096) == b"WATCHDOG=1"


def test_main_loop_pings_at_the_expected_cadence_and_a_stalled_loop_stops_them(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real loop on a real clock: WatchdogSec=0.2 s -> a ping every 0.1 s; a stall -> none."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    interval = notifier.watchdog_interval()
    assert interval is not None and interval == pytest.approx(0.1)
    pinger = WatchdogPinger(notifier, interval)

    stall = threading.Event()
    resume = threading.Event()
    stop = threading.Event()

    def main_loop() -> None:  # what Daemon._main_loop does: poll, work, maybe_ping
        while not stop.is_set():
            if stall.is_set():
                resume.wait(5)  # a hung main loop: a deadlock, a blocking call...
                stall.clear()
            pinger.maybe_ping()
            time.sleep(0.005)

    thread = threading.Thread(target=main_loop, daemon=True)
    thread.start()
    try:
        arrivals = []
        deadline = time.monotonic() + 0.65
        while time.monotonic() < deadline:
            assert notify_socket.receive(timeout=1.0) == b"WATCHDOG=1"
            arrivals.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert 5 <= len(arrivals) <= 8, arrivals
        assert all(gap >= 0.08 for gap in gaps), gaps  # never faster than the interval
        assert max(gaps) < 0.3, gaps  # and steady

        stall.set()
        time.sleep(0.02)
        while not notify_socket.nothing_within(0.0001):
            pass  # drain a ping sent just before the stall took effect
        assert notify_socket.nothing_within(0.5), "a stalled main loop must not ping"

        resume.set()
        assert notify_socket.receive(timeout=1.0) == b"WATCHDOG=1"  # pings resume at once
    finally:
        stop.set()
        resume.set()
        thread.join(5)
