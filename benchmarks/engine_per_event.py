"""hookd's own cost of one fix, with an empty pool and with a 100,000-template pool indexed.

``python -m benchmarks.engine_per_event [--pool 100000] [--imports 300]``

The runner's ``scale`` scenario measures READY -> template update through the whole
production path (export, event, hookd, simulator); on a 2-CPU machine shared by the
simulator, hookd and the runner, its empty-pool reference moves between runs (p50 2.0 to
4.1 ms over five runs of the same code) and so does the ratio. This isolates what the
target is about, hookd's per-event work: the engine of a ``hookd run`` (its client, world
cache, index, applier, planner) in this process, against the instrumented simulator in its
own process, reconciling freshly exported-like container images one after another
(``Engine.reconcile_image``: image.info, template.info, template.update, image.update).
CPU time is this process's (the simulator's work is not in it); wall time includes the
simulator's answers.

Three rounds: an engine whose sweep indexed an empty pool; an engine whose sweep indexed
the pool of ``--pool`` ordinary images and templates; the first engine again, against the
now large simulator (separates the simulator's slow-down from hookd's).
"""

from __future__ import annotations

import argparse
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


def _engine(sim: SimProcess, workdir: Path) -> Components:
    workdir.mkdir(parents=True, exist_ok=True)
    config = from_mapping(simulator_config(workdir, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url,
                                           session=f"oneadmin:{PASSWORD}",
                                           registry=sim.registry_host))
    components = build(config)
    components.engine.sweep(lambda _image, _reason: None)
    return components


def _round(sim: SimProcess, c: Components, label: str, imports: int,
           warmup: int) -> dict[str, Any]:
    pool = container_pool(sim, imports + warmup, label, state="READY")
    for template_id in pool.template_ids:  # what the template.allocate events would do
        c.index.put(c.client.template(template_id))
    cpu: list[float] = []
    wall: list[float] = []
    for image_id in pool.image_ids:
        started, started_cpu = time.perf_counter(), time.process_time()
        c.engine.reconcile_image(image_id)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    cpu, wall = sorted(cpu[warmup:]), sorted(wall[warmup:])
    return {"imports": len(cpu), "indexed_templates": len(c.index),
            "cpu_ms_p50": cpu[len(cpu) // 2] * 1e3, "cpu_ms_mean": sum(cpu) / len(cpu) * 1e3,
            "wall_ms_p50": wall[len(wall) // 2] * 1e3,
            "wall_ms_mean": sum(wall) / len(wall) * 1e3}


def measure(pool: int, imports: int, warmup: int, workdir: Path) -> dict[str, Any]:
    configure_logging(level="warning")
    sim = SimProcess(ready_delay=0.05, workdir=workdir / "sim")
    try:
        empty = _engine(sim, workdir / "empty")
        out = {"empty_pool": _round(sim, empty, "empty", imports, warmup)}
        plain_pool(sim, pool, pool, "plain")
        full = _engine(sim, workdir / "full")
        out["pool_present"] = _round(sim, full, "pool", imports, warmup)
        out["empty_index_large_simulator"] = _round(sim, empty, "again", imports, warmup)
    finally:
        sim.stop()
    out["cpu_ratio_p50"] = out["pool_present"]["cpu_ms_p50"] / out["empty_pool"]["cpu_ms_p50"]
    out["wall_ratio_p50"] = (out["pool_present"]["wall_ms_p50"]
                             / out["empty_pool"]["wall_ms_p50"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine_per_event")
    p.add_argument("--pool", type=int, default=100_000, help="ordinary images and templates")
    p.add_argument("--imports", type=int, default=300)
    p.add_argument("--warmup", type=int, default=50)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hookd-bench-") as tmp:
        result = measure(args.pool, args.imports, args.warmup, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
