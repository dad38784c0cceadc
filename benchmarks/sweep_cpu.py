"""hookd's own CPU for one full sweep of the ``scale`` pool, and where it goes.

``python -m benchmarks.sweep_cpu [--images 100000] [--templates 100000] [--repeat 3]
[--profile FILE]``

The pool is the ``scale`` scenario's: ``--container-fraction`` of the images are container
images (Docker Hub nginx, each with its own VM template), half of those already fixed by
hookd (here: by the measured engine itself, before the timed sweeps), the rest ordinary
images and templates. The engine of a ``hookd run`` (its client, world cache, index, OCI
resolver, planner) runs in this process against the simulator in its own process, so the
CPU time measured (``time.process_time``) is hookd's alone. The first sweep indexes the
pool and finds the unfixed half (submissions are only counted, never run); the timed sweeps
are what a periodic sweep costs: nothing changed since the previous one. ``--profile``
writes the cProfile statistics of the last timed sweep (read them with ``python -m pstats``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.pools import container_pool, plain_pool
from benchmarks.procs import PASSWORD, SimProcess
from hookd.config import from_mapping
from hookd.daemon import Components, build
from hookd.logs import configure_logging
from hookd.testing.daemon_config import simulator_config


def _components(sim: SimProcess, workdir: Path) -> Components:
    workdir.mkdir(parents=True, exist_ok=True)
    config = from_mapping(simulator_config(workdir, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url,
                                           session=f"oneadmin:{PASSWORD}",
                                           registry=sim.registry_host))
    return build(config)


def measure(images: int, templates: int, container_fraction: float, repeat: int,
            workdir: Path, profile: Path | None) -> dict[str, Any]:
    configure_logging(level="warning")
    sim = SimProcess(ready_delay=0.05, workdir=workdir / "sim")
    try:
        containers = round(images * container_fraction)
        fixed = containers // 2
        c = _components(sim, workdir / "hookd")
        half = container_pool(sim, fixed, "fixed", state="READY")
        c.engine.sweep(lambda _image, _reason: None)
        for image_id in half.image_ids:
            c.engine.reconcile_image(image_id)
        container_pool(sim, containers - fixed, "unfixed", state="READY")
        plain_pool(sim, images - containers, max(0, templates - containers), "plain")
        submitted: list[int] = []
        started, started_cpu = time.perf_counter(), time.process_time()
        first = c.engine.sweep(lambda image, _reason: submitted.append(image))
        out: dict[str, Any] = {
            "images": first.images, "templates": first.templates,
            "container_images": first.container_images,
            "first_sweep": {"cpu_seconds": time.process_time() - started_cpu,
                            "wall_seconds": time.perf_counter() - started,
                            "submitted": len(submitted)},
        }
        runs: list[dict[str, float]] = []
        for n in range(repeat):
            submitted.clear()
            last = profile is not None and n == repeat - 1
            profiler = cProfile.Profile(time.process_time) if last else None
            started, started_cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            c.engine.sweep(lambda image, _reason: submitted.append(image))
            if profiler is not None:
                profiler.disable()
            runs.append({"cpu_seconds": time.process_time() - started_cpu,
                         "wall_seconds": time.perf_counter() - started,
                         "submitted": len(submitted)})
            if profiler is not None and profile is not None:
                profiler.dump_stats(str(profile))
        out["repeat_sweeps"] = runs
        out["cpu_seconds_best"] = min(r["cpu_seconds"] for r in runs)
    finally:
        sim.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep_cpu")
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--templates", type=int, default=100_000)
    p.add_argument("--container-fraction", type=float, default=0.1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", type=Path, default=None,
                   help="write the cProfile statistics of the last sweep here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hookd-bench-") as tmp:
        result = measure(args.images, args.templates, args.container_fraction, args.repeat,
                         Path(tmp), args.profile)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
