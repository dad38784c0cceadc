"""Stopping the child processes tests and benchmarks start (simulator, hookd, registry)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen[bytes], timeout: float,
                 sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` and wait up to ``timeout`` s; SIGKILL it if it does not exit. Returns
    whether it exited by itself (True also when it had already exited)."""
    if process.poll() is not None:
        return True
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return False
    return True
