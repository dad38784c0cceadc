"""``python -m benchmarks``: hookd's performance, measured against the simulator.

Every process is separate, as in production: the simulator (``python -m benchmarks.simproc``,
oned's XML-RPC API and hook-manager event stream plus a fake registry), hookd
(``python -m hookd run --config FILE``, started as systemd starts it), the baseline's hook
processes, and this runner, which only drives and reads. Times come from the simulator's
own records (see :mod:`benchmarks.simproc`), CPU and memory from ``/proc``.

Phases (each scenario can be picked with ``--scenarios``):

* **main** (one simulator): latency, burst, idle (small pool), then with hookd stopped the
  bare-client limit and the onehem baseline, on the same simulator;
* **scale** (a second simulator): per-event cost on an empty pool, a 100,000-image /
  100,000-template pool, hookd's start-up sweep over it, per-event cost with the pool
  present, idle with the pool present (and the cost of one sweep);
* **pool_parse** (a third simulator, only to serialise the pool): pyone vs lxml.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.baseline import HookRunner
from benchmarks.limit import run_limit
from benchmarks.pools import container_pool, plain_pool
from benchmarks.procs import (
    PASSWORD,
    REPO_ROOT,
    HookdProcess,
    RssSampler,
    SimProcess,
    Timeline,
    cpu_seconds,
    free_port,
    hookd_config,
)
from benchmarks.report import render_markdown

SCENARIOS = ("latency", "burst", "limit", "baseline", "scale", "idle", "pool_parse")
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "latest.json"
DEFAULT_MD = REPO_ROOT / "benchmarks" / "results" / "latest.md"

SIZES: dict[str, dict[str, Any]] = {
    "full": {"latency_imports": 1000, "burst_images": 5000, "limit_images": 5000,
             "baseline_serial": 20, "baseline_events": 200, "baseline_scan_events": 1,
             "scale_images": 100_000, "scale_templates": 100_000, "scale_events": 200,
             "idle_seconds": 60.0, "pool_parse_images": 100_000, "warmup": 5},
    "smoke": {"latency_imports": 4, "burst_images": 20, "limit_images": 20,
              "baseline_serial": 2, "baseline_events": 4, "baseline_scan_events": 2,
              "scale_images": 400, "scale_templates": 400, "scale_events": 3,
              "idle_seconds": 2.0, "pool_parse_images": 400, "warmup": 1},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95),
            "p99": percentile(ms, 99), "mean": statistics.fmean(ms), "min": min(ms),
            "max": max(ms)}


# -- context --------------------------------------------------------------------------------------
@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    payloads: dict[str, str] = field(default_factory=dict)
    reference: tuple[int, int] | None = None  # an (image, template) hookd fixed

    def wants(self, name: str) -> bool:
        return name in self.args.scenarios


def start_hookd(ctx: Context, sim: SimProcess, name: str) -> HookdProcess:
    workdir = ctx.workdir / name
    config = hookd_config(
        workdir, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url, registry_host=sim.registry_host,
        kernels={"kvm": sim.seed["images"]["kernel-kvm"],
                 "firecracker": sim.seed["images"]["kernel-firecracker"]},
        workers=ctx.args.workers, extra=ctx.args.hookd_settings)
    hookd = HookdProcess(workdir, config, pythonpath=ctx.args.hookd_pythonpath).start()
    hookd.wait_ready(600)
    return hookd


def wait_quiet(sim: SimProcess, quiet: float = 0.5, timeout: float = 600.0) -> None:
    """Until no ``one.*`` call (other than hookd's Raft poll) came for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = sim.bench("last_calls")
        busy = [t for m, t in last.items() if m != "one.zone.raftstatus"]
        now = sim.bench("now")
        if not busy or now - max(busy) >= quiet:
            return
        time.sleep(0.1)


def reindex(hookd: HookdProcess, sim: SimProcess) -> float:
    """SIGHUP (``systemctl reload``): hookd sweeps, which indexes bulk-created templates.
    Returns the sweep's duration as hookd logged it."""
    before = len(hookd.events("sweep.done"))
    hookd.signal(signal.SIGHUP)
    deadline = time.monotonic() + 1800
    while len(hookd.events("sweep.done")) <= before:
        if time.monotonic() > deadline or not hookd.alive():
            raise RuntimeError("hookd did not finish its reload sweep")
        time.sleep(0.1)
    wait_quiet(sim)
    return float(hookd.events("sweep.done")[-1].get("seconds", math.nan))


def pool_size(sim: SimProcess, pool: str) -> int:
    """Objects in a pool: the newest ID + 1 (nothing is deleted in a benchmark)."""
    import re

    ok, xml, *_ = sim.client.call(f"one.{pool}.info", -2, 0, -2)
    ids = [int(i) for i in re.findall(r"<ID>(\d+)</ID>", str(xml))] if ok else []
    return max(ids, default=-1) + 1


# Calls whose number does not depend on the images: hookd's Raft poll (every
# ha.poll_interval) and its world refresh (at most once a minute, and at each sweep).
PERIODIC = frozenset({"one.zone.raftstatus", "one.system.version", "one.system.config",
                      "one.datastorepool.info", "one.hostpool.info", "one.marketpool.info"})


def calls_summary(counters: dict[str, int], fixed: int) -> dict[str, Any]:
    total = sum(counters.values())
    per_image = sum(n for m, n in counters.items() if m not in PERIODIC)
    return {"by_method": dict(sorted(counters.items())), "total": total,
            "per_fixed_image_all": total / fixed if fixed else math.nan,
            "per_fixed_image": per_image / fixed if fixed else math.nan,
            "periodic_excluded": sorted(PERIODIC & set(counters))}


# -- one import at a time ------------------------------------------------------------
APPS = ("nginx", "alpine", "redis", "postgres", "httpd")
DATASTORES = ("kvm-images", "fc-images")


def import_loop(sim: SimProcess, hookd: HookdProcess, count: int, warmup: int,
                prefix: str) -> dict[str, Any]:
    """``count`` real imports (``onemarketapp export`` of the Docker Hub apps, alternating
    KVM and Firecracker datastores), one after another: each is exported, turns READY after
    the simulator's ready delay, and the next starts once hookd fixed it."""
    to_template: list[float] = []
    to_status: list[float] = []
    failures = 0
    cpu0 = started = 0.0
    for k in range(warmup + count):
        if k == warmup:
            cpu0, started = hookd.cpu(), time.monotonic()
        app = sim.seed["apps"][f"dockerhub/{APPS[k % len(APPS)]}"]
        ds = sim.seed["datastores"][DATASTORES[k % len(DATASTORES)]]
        image_id, template_id = sim.client.export_app(app, ds, name=f"{prefix}-{k}")
        if template_id is None:
            raise RuntimeError("the export created no VM template")
        if not sim.bench("wait", [image_id], [template_id], 60.0):
            failures += 1
            continue
        rec = sim.bench("records", [image_id], [template_id])
        if k >= warmup:
            to_template.append(rec["template"][0] - rec["ready"][0])
            to_status.append(rec["status"][0] - rec["ready"][0])
    elapsed = time.monotonic() - started
    cpu = hookd.cpu() - cpu0
    return {
        "imports": count, "warmup_excluded": warmup, "failures": failures,
        "ready_to_template_update_ms": distribution_ms(to_template),
        "ready_to_status_written_ms": distribution_ms(to_status),
        "hookd_cpu_ms_per_import": 1000.0 * cpu / max(1, count),
        "wall_seconds": elapsed,
    }


# -- scenarios ----------------------------------------------------------------------
def scenario_latency(ctx: Context, sim: SimProcess, hookd: HookdProcess) -> None:
    log(f"latency: {ctx.args.latency_imports} imports one after another")
    result = import_loop(sim, hookd, ctx.args.latency_imports, ctx.args.warmup, "latency")
    result["method"] = (
        "real exports of the seeded Docker Hub apps (5 apps, KVM and Firecracker datastores "
        "alternating); READY is timestamped by the simulator when it publishes the event, the "
        "template update when the simulator applies hookd's one.template.update; the next "
        "import starts after the previous one is fixed; the runner waits with one blocking "
        "control call, so nothing polls while hookd works")
    ctx.results["latency"] = result


def scenario_burst(ctx: Context, sim: SimProcess, hookd: HookdProcess, count: int,
                   record: bool) -> None:
    window = count / ctx.args.burst_rate
    log(f"burst: {count} images turning READY within {window:g} s")
    pool = container_pool(sim, count, "burst", state="LOCKED")
    sweep_s = reindex(hookd, sim)
    sim.client.controls.reset_counters()
    sim.bench("reset")
    cpu_h0, cpu_s0 = hookd.cpu(), cpu_seconds(sim.pid)
    sim.bench("flip", pool.image_ids, window)
    ok = sim.bench("wait", pool.image_ids, pool.template_ids, 1800.0)
    flip_start, flip_end, _ = sim.bench("flip_done", 600.0)
    cpu_h1, cpu_s1 = hookd.cpu(), cpu_seconds(sim.pid)
    rec = sim.bench("records", pool.image_ids, pool.template_ids)
    time.sleep(1.0)
    counters = sim.client.controls.counters()
    verify = sim.bench("verify", pool.image_ids, pool.template_ids)
    ctx.payloads = {m: sim.bench("last_payload", m)
                    for m in ("one.template.update", "one.image.update")}
    ctx.reference = (pool.image_ids[0], pool.template_ids[0])
    if not record:
        return
    ready = [r for r in rec["ready"] if r >= 0]
    status = [s for s in rec["status"] if s >= 0]
    elapsed = max(status) - min(ready) if ready and status else math.nan
    changes = [int(c) for c in rec["changes"]]
    ctx.results["burst"] = {
        "images": count, "all_fixed": bool(ok), "verified": verify,
        "templates_changed_exactly_once": sum(1 for c in changes if c == 1),
        "ready_events_span_seconds": flip_end - flip_start,
        "seconds_to_all_fixed": elapsed,
        "images_per_second": count / elapsed if elapsed > 0 else math.nan,
        "calls": calls_summary(counters, verify["applied"]),
        "hookd_cpu_seconds": cpu_h1 - cpu_h0,
        "hookd_cpu_ms_per_image": 1000.0 * (cpu_h1 - cpu_h0) / count,
        "simulator_cpu_ms_per_image": 1000.0 * (cpu_s1 - cpu_s0) / count,
        "ready_to_template_update_ms": distribution_ms(
            [t - r for t, r in zip(rec["template"], rec["ready"], strict=True)
             if t >= 0 and r >= 0]),
        "reindex_sweep_seconds": sweep_s,
        "hookd_vmhwm_mb": hookd.hwm_kb() * 1024 / 1e6,
        "method": (
            "images LOCKED and their templates bulk-created (no events), hookd reloaded "
            "(SIGHUP: a sweep indexes the templates), counters reset, then the simulator "
            "turns the images READY from a thread inside it (sim.set_image_state's code "
            "path: one STATE event per image), spaced evenly over the window; time = last "
            "image status written - first READY published; calls = every one.* call the "
            "simulator received from the first READY to 1 s after the last fix"),
    }


def scenario_idle(ctx: Context, sim: SimProcess, hookd: HookdProcess, label: str,
                  sweep_cost: bool) -> dict[str, Any]:
    seconds = float(ctx.args.idle_seconds)
    log(f"idle ({label}): {seconds:g} s")
    wait_quiet(sim, 1.0)
    sim.client.controls.reset_counters()
    cpu0, t0 = hookd.cpu(), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = hookd.cpu(), time.monotonic()
    out: dict[str, Any] = {
        "pool": label, "seconds": t1 - t0, "hookd_cpu_seconds": cpu1 - cpu0,
        "cpu_percent_of_one_core": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        "calls": sim.client.controls.counters(),
        "method": "utime+stime of the hookd process from /proc/<pid>/stat (10 ms ticks) over "
                  "the window, after the simulator saw no call but the Raft poll for 1 s",
    }
    if sweep_cost:
        # Two sweeps one after the other: the first after the start-up's fixes (the 5,000
        # templates fixed since the start-up sweep are planned again), then a periodic sweep
        # as it runs every sweep_interval once nothing changed: the target's figure.
        for key in ("first_sweep", "one_sweep"):
            sim.client.controls.reset_counters()
            c0 = hookd.cpu()
            seconds_logged = reindex(hookd, sim)
            cost = hookd.cpu() - c0
            calls = sim.client.controls.counters()
            out[key] = {
                "hookd_cpu_seconds": cost, "sweep_seconds_logged": seconds_logged,
                "amortised_cpu_percent_at_default_600s_interval": 100.0 * cost / 600.0,
                "writes": sum(n for m, n in calls.items() if m.endswith((".update", ".allocate"))),
            }
        out["one_sweep"]["method"] = (
            "SIGHUP twice; hookd's utime+stime over each sweep; the second is the periodic "
            "sweep of an unchanged pool (the first re-plans the templates fixed since the "
            "start-up sweep); writes = update/allocate calls the simulator received")
    return out


def scenario_limit(ctx: Context, sim: SimProcess, count: int) -> None:
    log(f"limit: bare client, {count} images, {ctx.args.workers} threads")
    pool = container_pool(sim, count, "limit", state="LOCKED")
    sim.bench("flip", pool.image_ids, 0.0)
    sim.bench("flip_done", 600.0)
    wait_quiet(sim)
    sim.client.controls.reset_counters()
    cpu_s0 = cpu_seconds(sim.pid)
    runner0 = os.times()
    result = run_limit(sim.xmlrpc_url, f"oneadmin:{PASSWORD}",
                       list(zip(pool.image_ids, pool.template_ids, strict=True)),
                       workers=ctx.args.workers,
                       template_payload=ctx.payloads["one.template.update"],
                       image_payload=ctx.payloads["one.image.update"])
    runner1 = os.times()
    cpu_s1 = cpu_seconds(sim.pid)
    counters = sim.client.controls.counters()
    verify = sim.bench("verify", pool.image_ids, pool.template_ids)
    ctx.results["limit"] = {
        "images": count, "workers": ctx.args.workers, "seconds": result.seconds,
        "images_per_second": result.per_second, "failures": result.failures,
        "verified": verify, "calls": calls_summary(counters, count),
        "simulator_cpu_ms_per_image": 1000.0 * (cpu_s1 - cpu_s0) / count,
        "client_cpu_ms_per_image": 1000.0 * ((runner1.user - runner0.user)
                                             + (runner1.system - runner0.system)) / count,
        "method": (
            "hookd stopped; the images are READY and unfixed; per image one.image.info, "
            "one.template.info, one.template.update and one.image.update (merge): the calls a "
            "fix needs now that the image is read from oned, never taken from the event "
            "(issue 11), with the exact payloads hookd "
            "sent in the burst (ids swapped), pre-encoded, over http.client with one "
            "connection per call, from as many threads as hookd has workers"),
    }


def scenario_baseline(ctx: Context, sim: SimProcess, config: Path) -> None:
    args = ctx.args
    serial, events, scan = args.baseline_serial, args.baseline_events, args.baseline_scan_events
    log(f"baseline: {serial} serial + {events} concurrent hook processes "
        f"(+{scan} scanning the template pool)")
    pool = container_pool(sim, serial + events + scan, "onehem", state="LOCKED")
    wait_quiet(sim)
    mapping = dict(zip(pool.image_ids, pool.template_ids, strict=True))
    out: dict[str, Any] = {"concurrency": args.workers,
                           "template_pool": pool_size(sim, "templatepool")}
    runner = HookRunner(sim.zmq_url, config, mapping, concurrency=args.workers).start()
    try:
        sim.bench("reset")
        sim.client.controls.reset_counters()
        lat: list[float] = []
        for image_id, template_id in zip(pool.image_ids[:serial], pool.template_ids[:serial],
                                         strict=True):
            sim.bench("flip", [image_id], 0.0)
            sim.bench("flip_done", 60.0)
            if sim.bench("wait", [image_id], [template_id], 120.0):
                rec = sim.bench("records", [image_id], [template_id])
                lat.append(rec["status"][0] - rec["ready"][0])
        serial_runs = runner.wait_runs(set(pool.image_ids[:serial]), 60.0)
        counters = sim.client.controls.counters()
        out["serial"] = {
            "events": serial, "ready_to_status_written_ms": distribution_ms(lat),
            "process_wall_ms": distribution_ms([r.wall for r in serial_runs]),
            "import_ms": distribution_ms([float(r.report.get("import_s", math.nan))
                                          for r in serial_runs if r.report]),
            "calls_per_event": sum(counters.values()) / max(1, serial),
            "calls": counters,
        }
        ids = pool.image_ids[serial:serial + events]
        tids = pool.template_ids[serial:serial + events]
        children0 = os.times()
        sim.bench("flip", ids, len(ids) / args.burst_rate)
        ok = sim.bench("wait", ids, tids, 3600.0)
        runs = runner.wait_runs(set(ids), 60.0)
        children1 = os.times()
        rec = sim.bench("records", ids, tids)
        ready = [r for r in rec["ready"] if r >= 0]
        status = [s for s in rec["status"] if s >= 0]
        elapsed = max(status) - min(ready) if ready and status else math.nan
        out["concurrent"] = {
            "events": events, "all_fixed": bool(ok),
            "seconds_to_all_fixed": elapsed,
            "events_per_second": events / elapsed if elapsed > 0 else math.nan,
            "cpu_ms_per_event": 1000.0 * ((children1.children_user - children0.children_user)
                                          + (children1.children_system
                                             - children0.children_system)) / max(1, events),
            "process_wall_ms": distribution_ms([r.wall for r in runs]),
            "failed_processes": sum(1 for r in runs if r.returncode != 0),
        }
        verify = sim.bench("verify", pool.image_ids[:serial + events],
                           pool.template_ids[:serial + events])
        out["verified"] = verify
        if ctx.reference is not None:
            mine = sim.bench("signature", pool.image_ids[0], pool.template_ids[0])
            theirs = sim.bench("signature", *ctx.reference)
            out["same_fix_as_hookd"] = mine == theirs
        errors = [r.error for r in runner.runs if r.error]
        if errors:
            out["first_error"] = errors[0][-1000:]
    finally:
        runner.stop()
    if scan:
        ids = pool.image_ids[serial + events:]
        tids = pool.template_ids[serial + events:]
        # One at a time: each process parses the whole template pool with pyone.
        scanner = HookRunner(sim.zmq_url, config, dict(zip(ids, tids, strict=True)),
                             concurrency=1, scan=True).start()
        try:
            lat = []
            for image_id, template_id in zip(ids, tids, strict=True):
                sim.bench("flip", [image_id], 0.0)
                sim.bench("flip_done", 60.0)
                if sim.bench("wait", [image_id], [template_id], 1800.0):
                    rec = sim.bench("records", [image_id], [template_id])
                    lat.append(rec["status"][0] - rec["ready"][0])
            runs = scanner.wait_runs(set(ids), 600.0)
            out["scan"] = {
                "events": scan, "all_fixed": len(lat) == scan,
                "ready_to_status_written_ms": distribution_ms(lat),
                "process_wall_ms": distribution_ms([r.wall for r in runs]),
                "template_pool": pool_size(sim, "templatepool"),
                "failed_processes": sum(1 for r in runs if r.returncode != 0),
            }
        finally:
            scanner.stop()
    out["method"] = (
        "hookd stopped; an onehem-like listener (SUB on the READY filter) runs `python -m "
        "benchmarks.onehem_hook` per event with the image XML as $TEMPLATE, at most "
        f"{args.workers} at a time: import pyone + the fix logic, read image and template "
        "and the world with pyone (bindings), hookd's planner, write with pyone. 'serial': "
        "one event at a time (READY published -> status written); 'concurrent': events "
        "published at the burst's rate; the hook is told its template id (a real hook must "
        "find it: 'scan', one event at a time, reads the whole template pool instead)")
    ctx.results["baseline"] = out


def scenario_scale(ctx: Context) -> None:
    args = ctx.args
    n_images, n_templates = args.scale_images, args.scale_templates
    containers = round(n_images * args.scale_container_fraction)
    fixed = containers // 2
    unfixed = containers - fixed
    plain_images = n_images - containers
    plain_templates = max(0, n_templates - containers)
    log(f"scale: {n_images} images ({containers} container, {fixed} already fixed), "
        f"{n_templates} templates")
    sim = SimProcess(ready_delay=args.ready_delay, workdir=ctx.workdir / "scale-sim")
    out: dict[str, Any] = {"images": n_images, "templates": n_templates,
                           "container_images": containers, "already_fixed": fixed}
    try:
        first = start_hookd(ctx, sim, "hookd-scale")
        try:
            log(f"scale: per-event cost on an empty pool ({args.scale_events} imports)")
            out["per_event_empty_pool"] = import_loop(sim, first, args.scale_events,
                                                      args.warmup, "empty")
            log(f"scale: hookd fixes the first half ({fixed} images)")
            half = container_pool(sim, fixed, "fixed", state="LOCKED")
            reindex(first, sim)
            sim.bench("flip", half.image_ids, 0.0)
            if not sim.bench("wait", half.image_ids, half.template_ids, 3600.0):
                raise RuntimeError("hookd did not fix the first half")
        finally:
            first.stop()
        log("scale: bulk-creating the rest of the pool")
        todo = container_pool(sim, unfixed, "unfixed", state="READY")
        plain = plain_pool(sim, plain_images, plain_templates, "plain")
        out["pool_built"] = {"fixed": len(half), "unfixed": len(todo),
                             "plain_images": len(plain.image_ids),
                             "plain_templates": len(plain.template_ids)}
        wait_quiet(sim)
        sim.client.controls.reset_counters()
        sim.bench("reset")
        log("scale: hookd starts against the populated simulator")
        # The same configuration as the first hookd, plus the metrics endpoint: the timeline
        # of queue depth and in-flight count during start-up comes from it.
        config_path = ctx.workdir / "hookd-scale" / "hookd.conf"
        config = yaml.safe_load(config_path.read_text())
        metrics_port = free_port()
        config.setdefault("metrics", {})["listen"] = f"127.0.0.1:{metrics_port}"
        config_path.write_text(yaml.safe_dump(config))
        hookd = HookdProcess(ctx.workdir / "hookd-scale", config_path,
                             pythonpath=args.hookd_pythonpath).start()
        sampler = RssSampler(hookd.pid).start()
        timeline = Timeline(hookd.pid, f"http://127.0.0.1:{metrics_port}/metrics").start()
        try:
            ready_at = hookd.wait_ready(1800)
            ok = sim.bench("wait", todo.image_ids, todo.template_ids, 3600.0)
            rec = sim.bench("records", todo.image_ids, todo.template_ids)
            last_fix = max([s for s in rec["status"] if s >= 0], default=ready_at)
            wait_quiet(sim, 2.0)
            timeline.stop()
            converged = max(ready_at, last_fix) - hookd.started_at
            hwm = hookd.hwm_kb()
            counters = sim.client.controls.counters()
            refixed = sum(int(c) for c in sim.bench("records", half.image_ids,
                                                    half.template_ids)["changes"])
            sweeps = hookd.events("sweep.done")
            readies = hookd.events("hookd.ready")
            out["startup"] = {
                "all_fixed": bool(ok), "converged_seconds": converged,
                "ready_seconds": ready_at - hookd.started_at,
                "sweep_seconds_logged": float(sweeps[0].get("seconds", math.nan))
                if sweeps else math.nan,
                "peak_rss_mb": hwm * 1024 / 1e6, "peak_rss_sampled_mb":
                    sampler.peak_kb * 1024 / 1e6,
                "calls": calls_summary(counters, len(todo)),
                "already_fixed_templates_changed": refixed,
                "verified": sim.bench("verify", todo.image_ids + half.image_ids,
                                      todo.template_ids + half.template_ids),
                "hookd_cpu_seconds": hookd.cpu(),
                "sweeps": [{"seconds": e.get("seconds"), "images": e.get("images"),
                            "templates": e.get("templates"), "submitted": e.get("submitted")}
                           for e in sweeps],
                "ready_status": readies[0].get("status") if readies else None,
                "timeline": timeline.summary(),
                "method": (
                    "time from starting `hookd run` to the later of READY=1 (first sweep "
                    "done) and the last image status written by the simulator, hookd then "
                    "silent but for its Raft poll; peak RSS = VmHWM of the hookd process "
                    "(also sampled every 0.1 s); calls = every one.* call in that time; "
                    "timeline: RSS from /proc and hookd_queue_depth / hookd_in_flight from "
                    "hookd's metrics endpoint (metrics.listen set for this hookd only), "
                    "every 0.5 s from the start until converged"),
            }
            sampler.stop()
            log(f"scale: per-event cost with the pool present ({args.scale_events} imports)")
            with_pool = import_loop(sim, hookd, args.scale_events, args.warmup, "pooled")
            out["per_event_with_pool"] = with_pool
            empty = out["per_event_empty_pool"]["ready_to_template_update_ms"]
            full = with_pool["ready_to_template_update_ms"]
            out["per_event_ratio_p50"] = full.get("p50", math.nan) / empty.get("p50", math.nan)
            out["per_event_ratio_mean"] = (full.get("mean", math.nan)
                                           / empty.get("mean", math.nan))
            out["per_event_cpu_ratio"] = (with_pool["hookd_cpu_ms_per_import"]
                                          / out["per_event_empty_pool"]
                                          ["hookd_cpu_ms_per_import"])
            if ctx.wants("idle"):
                ctx.results.setdefault("idle", {})["scale_pool"] = scenario_idle(
                    ctx, sim, hookd, f"{n_images} images / {n_templates} templates",
                    sweep_cost=True)
            out["problems_logged"] = len(hookd.problems())
        finally:
            sampler.stop()
            timeline.stop()
            hookd.stop()
    finally:
        sim.stop()
    ctx.results["scale"] = out


def scenario_pool_parse(ctx: Context) -> None:
    from benchmarks.pool_parse import build_document, compare

    log(f"pool_parse: {ctx.args.pool_parse_images}-image pool document")
    document = build_document(ctx.args.pool_parse_images, ctx.workdir / "pool-sim",
                              ready_delay=ctx.args.ready_delay)
    ctx.results["pool_parse"] = compare(document, repeat=ctx.args.pool_parse_repeat)


def main_phase(ctx: Context) -> None:
    args = ctx.args
    needed = [s for s in ("latency", "burst", "limit", "baseline") if ctx.wants(s)]
    if not needed and not ctx.wants("idle"):
        return
    sim = SimProcess(ready_delay=args.ready_delay, workdir=ctx.workdir / "main-sim")
    try:
        hookd = start_hookd(ctx, sim, "hookd-main")
        try:
            if ctx.wants("latency"):
                scenario_latency(ctx, sim, hookd)
            if ctx.wants("burst"):
                scenario_burst(ctx, sim, hookd, args.burst_images, record=True)
            elif ctx.wants("limit") or ctx.wants("baseline"):
                scenario_burst(ctx, sim, hookd, 10, record=False)  # payloads, reference
            if ctx.wants("idle"):
                ctx.results.setdefault("idle", {})["main_pool"] = scenario_idle(
                    ctx, sim, hookd, "small (the main phase's pool)", sweep_cost=False)
            ctx.results["main_hookd"] = {"problems_logged": len(hookd.problems()),
                                         "vmhwm_mb": hookd.hwm_kb() * 1024 / 1e6}
        finally:
            hookd.stop()
        if ctx.wants("limit"):
            scenario_limit(ctx, sim, args.limit_images)
        if ctx.wants("baseline"):
            scenario_baseline(ctx, sim, hookd.config)
    finally:
        sim.stop()


# -- machine and run description --------------------------------------------------------------
def environment(cpu_info: dict[str, str]) -> dict[str, Any]:
    """Everything a figure may depend on besides hookd's code: hookd runs with this
    interpreter (sys.executable), so these are its distributions and libraries."""
    import ctypes
    from importlib.metadata import distributions

    from lxml import etree

    dists = sorted({(d.metadata["Name"] or "?", d.version) for d in distributions()},
                   key=lambda nv: nv[0].lower())
    try:
        import zmq

        zmq_versions = {"pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version()}
    except ImportError:
        zmq_versions = {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        glibc = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError):
        glibc = "-".join(platform.libc_ver())
    return {
        "python_build": " ".join(platform.python_build()),
        "python_compiler": platform.python_compiler(),
        "python_executable": sys.executable,
        "glibc": glibc,
        "kernel": platform.uname().version + " " + platform.release(),
        "cpu": cpu_info,
        "libxml2_compiled": ".".join(map(str, etree.LIBXML_COMPILED_VERSION)),
        "libxml2_loaded": ".".join(map(str, etree.LIBXML_VERSION)),
        "libxslt_loaded": ".".join(map(str, etree.LIBXSLT_VERSION)),
        **zmq_versions,
        # allocator and interpreter knobs that change memory figures
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("MALLOC_", "PYTHONMALLOC", "GLIBC_TUNABLES", "LD_PRELOAD",
                                 "OPENBLAS_", "PYTHONHASHSEED"))},
        "distributions": dict(dists),
    }


def describe(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    cpu = "unknown"
    cpu_info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model", "model name", "stepping",
                       "microcode", "cpu MHz", "cache size", "bogomips", "flags",
                       "address sizes") and key not in cpu_info:
                cpu_info[key] = value.strip()
            if not line.strip() and cpu_info:
                break  # the first CPU is enough: they are all of one kind here
        cpu = cpu_info.get("model name", cpu)
    except OSError:
        pass
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True,
                                  text=True, check=False).stdout.strip()
        except OSError:
            return ""

    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(), "cpu_model": cpu,
        "memory_mb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 10**6,
        "python": platform.python_version(), "kernel": platform.release(),
        "hookd": version("hookd"), "pyone": version("pyone"), "lxml": version("lxml"),
        "environment": environment(cpu_info),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "hookd", "handlers")),
        "workers": args.workers, "ready_delay_s": args.ready_delay,
        "hookd_settings": args.hookd_settings, "hookd_pythonpath": args.hookd_pythonpath,
        "burst_rate_per_s": args.burst_rate,
        "sizes": {k: getattr(args, k) for k in SIZES["full"]},
    }


# -- command line ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="hookd benchmarks against the simulator (each in its own process).")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)")
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="preset for every size below (default: full)")
    for key, value in SIZES["full"].items():
        kind = float if isinstance(value, float) else int
        p.add_argument("--" + key.replace("_", "-"), type=kind, default=None,
                       help=f"(full: {value}, smoke: {SIZES['smoke'][key]})")
    p.add_argument("--scale-container-fraction", type=float, default=0.1)
    p.add_argument("--pool-parse-repeat", type=int, default=1,
                   help="parses per parser (best time is reported)")
    p.add_argument("--workers", type=int, default=8,
                   help="hookd's reconcile.workers (its default); the bare client and the "
                        "baseline use as many")
    p.add_argument("--burst-rate", type=float, default=5000.0,
                   help="READY events per second in the burst (5,000 images: 1 s)")
    p.add_argument("--ready-delay", type=float, default=0.05,
                   help="simulator: seconds from export to READY")
    p.add_argument("--hookd-set", action="append", default=[], metavar="SECTION.KEY=YAML",
                   help="override a hookd.conf key (repeatable), e.g. one.page_size=500")
    p.add_argument("--hookd-pythonpath", default="", metavar="DIR",
                   help="prepend DIR to hookd's PYTHONPATH: to try a change to hookd without "
                        "editing it (a sitecustomize.py there can patch a module)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MD, help="markdown table file")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep processes' files here (default: a temporary directory)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser().error(f"unknown scenario(s): {', '.join(unknown)}")
    args.scenarios = chosen
    settings: dict[str, dict[str, Any]] = {}
    for item in args.hookd_set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            parser().error(f"--hookd-set wants SECTION.KEY=VALUE, not {item!r}")
        settings.setdefault(section, {})[name] = yaml.safe_load(value)
    args.hookd_settings = settings
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ctx = Context(args, workdir)
    meta = describe(args)
    started = time.monotonic()
    errors: dict[str, str] = {}
    phases: list[tuple[str, Callable[[Context], None]]] = [
        ("main", main_phase), ("scale", lambda c: scenario_scale(c) if c.wants("scale")
                               else None),
        ("pool_parse", lambda c: scenario_pool_parse(c) if c.wants("pool_parse") else None),
    ]
    for name, phase in phases:
        try:
            phase(ctx)
        except Exception as exc:  # noqa: BLE001 - a failed phase must not lose the others
            log(f"phase {name} failed: {type(exc).__name__}: {exc}")
            errors[name] = f"{type(exc).__name__}: {exc}"
    meta["duration_seconds"] = time.monotonic() - started
    document: dict[str, Any] = {"meta": meta, "scenarios": ctx.results, "errors": errors}
    from benchmarks.report import evaluate

    document["targets"] = evaluate(document)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hookd-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        document = run(args, workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    args.out.write_text(text)
    # The table is rendered from what the JSON file holds (key order included), so anyone
    # can regenerate the markdown from the JSON alone and get the same file.
    markdown = render_markdown(json.loads(text))
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown)
    log(f"wrote {args.out} and {args.markdown}")
    print(markdown)
    return 1 if document["errors"] else 0
