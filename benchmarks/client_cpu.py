"""CPU per call of hookd's HTTP clients: ``OneClient`` (XML-RPC) and ``RegistryClient``.

    python -m benchmarks.client_cpu [--tree DIR ...] [--repeats 5] [--scenarios ...]

Each ``--tree`` is a directory holding a ``hookd`` package (e.g. ``git archive`` of another
commit, unpacked): its client code is measured against the same simulator, so two commits
compare in one run. Default: this checkout only.

Method (the one of the HTTP client evaluation of issue 12):

* the simulator (``python -m benchmarks.simproc``, oned's XML-RPC API with xmlrpc-c's
  ``Connection: close``, plus a fake registry serving the seeded Docker Hub images) is its
  own process, so its CPU is never counted;
* every (tree, scenario) runs in a fresh worker process: warm-up calls, ``gc.collect()``, then
  N calls between two ``time.process_time()`` readings (user + system CPU of the worker, all
  threads); ``getrusage`` gives the user/system split. Wall time is never used;
* the order of the (tree, scenario) pairs is shuffled in every repeat; the report gives the
  median over repeats, the range, and for two trees the median of the per-repeat differences
  (robust against the load of a shared machine changing over time).

Scenarios:

* ``small``: ``update_image(id, <250-character template>)``, ``one.image.update`` (a 0.7 KB
  request, oned's ~0.4 KB answer);
* ``big``: ``update_template(id, <26,000-character value>)``, ``one.template.update``;
* ``page``: a walk of ``iter_images()`` over 2,000 images (one streamed pool page of 2,000 and
  a short one), each image parsed into ``ImageFacts``: CPU per walk;
* ``registry``: ``RegistryClient.fetch_config`` of ``nginx`` through the plain-HTTP mirror,
  caches off (tag resolved with HEAD, index, manifest, config blob: 4 requests): CPU per fetch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SMALL_VALUE = "x" * 200
BIG_VALUE = "QUJD" * 6500  # 26,000 characters, like a START_SCRIPT_BASE64
SCENARIOS = ("small", "big", "page", "registry")
CALLS = {"small": 3000, "big": 2000, "page": 20, "registry": 300}
WARMUP = {"small": 200, "big": 100, "page": 2, "registry": 20}
POOL_IMAGES = 2000
HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parent.parent


# -- the worker: imports hookd from PYTHONPATH (the tree under test) --------------------------
def worker(args: argparse.Namespace) -> None:
    import logging

    import structlog

    # hookd's default log level: the registry client's debug lines are not rendered.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    import hookd
    from hookd.client import OneClient

    if args.scenario == "registry":
        from hookd.oci import ImageReference, RegistryClient, RegistrySettings

        settings = RegistrySettings(
            plain_http_registries=frozenset({args.registry}),
            mirrors={"docker.io": [args.registry]},
            memory_cache_entries=0, memory_cache_bytes=0, tag_ttl=0)
        registry = RegistryClient(settings)
        ref = ImageReference.parse("nginx")

        def one() -> None:
            registry.fetch_config(ref)
    else:
        client = OneClient(args.xmlrpc, args.session)
        if args.scenario == "small":
            xml = f"<TEMPLATE><HOOKD_BENCH><![CDATA[{SMALL_VALUE}]]></HOOKD_BENCH></TEMPLATE>"

            def one() -> None:
                client.update_image(args.image, xml)
        elif args.scenario == "big":
            xml = f"<TEMPLATE><HOOKD_BENCH><![CDATA[{BIG_VALUE}]]></HOOKD_BENCH></TEMPLATE>"

            def one() -> None:
                client.update_template(args.template, xml)
        else:
            def one() -> None:
                count = sum(1 for _ in client.iter_images())
                if count < POOL_IMAGES:
                    raise RuntimeError(f"the walk saw {count} images")

    for _ in range(WARMUP[args.scenario]):
        one()
    gc.collect()
    n = CALLS[args.scenario] if args.calls is None else args.calls
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time()
    for _ in range(n):
        one()
    c1 = time.process_time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "scenario": args.scenario, "n": n, "hookd": os.path.dirname(hookd.__file__),
        "cpu_us": (c1 - c0) / n * 1e6,
        "user_us": (r1.ru_utime - r0.ru_utime) / n * 1e6,
        "sys_us": (r1.ru_stime - r0.ru_stime) / n * 1e6,
    }))


# -- the runner ------------------------------------------------------------------------------
def _clean_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.pools import plain_pool
    from benchmarks.procs import PASSWORD, SimProcess

    trees = [Path(t).resolve() for t in args.tree] or [REPO_ROOT]
    scenarios = [s for s in args.scenarios.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="hookd-client-cpu-") as tmp:
        sim = SimProcess(ready_delay=0.0, workdir=Path(tmp))
        try:
            pool = plain_pool(sim, POOL_IMAGES, 1, "cpu")
            session = f"oneadmin:{PASSWORD}"
            image, template = pool.image_ids[0], pool.template_ids[0]
            rows: list[dict[str, Any]] = []
            for repeat in range(args.repeats):
                order = [(t, s) for t in trees for s in scenarios]
                random.shuffle(order)
                for tree, scenario in order:
                    out = subprocess.run(
                        [sys.executable, str(HERE), "worker", "--scenario", scenario,
                         "--xmlrpc", sim.xmlrpc_url, "--session", session,
                         "--registry", sim.registry_host, "--image", str(image),
                         "--template", str(template)]
                        + ([] if args.calls is None else ["--calls", str(args.calls)]),
                        env=_clean_env(tree), cwd=tmp, capture_output=True, text=True,
                        check=False, timeout=1800)
                    if out.returncode != 0:
                        print(out.stderr, file=sys.stderr)
                        return 1
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    row.update(tree=str(tree), repeat=repeat)
                    rows.append(row)
                    print(f"repeat {repeat} {tree.name:>12} {scenario:>8} "
                          f"{row['cpu_us']:9.1f} us  (user {row['user_us']:.1f}, "
                          f"sys {row['sys_us']:.1f}; {row['hookd']})", flush=True)
        finally:
            sim.stop()
    report(rows, trees, scenarios)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


def report(rows: list[dict[str, Any]], trees: list[Path], scenarios: list[str]) -> None:
    print("\nCPU per call, microseconds: median (min-max) [median per-repeat delta vs the first "
          "tree]")
    for scenario in scenarios:
        base = {r["repeat"]: r["cpu_us"] for r in rows
                if r["scenario"] == scenario and r["tree"] == str(trees[0])}
        for tree in trees:
            mine = [r for r in rows if r["scenario"] == scenario and r["tree"] == str(tree)]
            values = [r["cpu_us"] for r in mine]
            user = statistics.median(r["user_us"] for r in mine)
            system = statistics.median(r["sys_us"] for r in mine)
            delta = ""
            if tree != trees[0]:
                deltas = [r["cpu_us"] - base[r["repeat"]] for r in mine if r["repeat"] in base]
                delta = f" [{statistics.median(deltas):+.0f}]"
            print(f"  {scenario:>8}  {tree.name:>14}: {statistics.median(values):8.0f} "
                  f"({min(values):.0f}-{max(values):.0f}, n={len(values)}){delta}  "
                  f"user {user:.0f} / sys {system:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_cpu",
                                     description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    w.add_argument("--scenario", choices=SCENARIOS, required=True)
    w.add_argument("--xmlrpc", required=True)
    w.add_argument("--session", required=True)
    w.add_argument("--registry", required=True)
    w.add_argument("--image", type=int, required=True)
    w.add_argument("--template", type=int, required=True)
    w.add_argument("--calls", type=int, default=None)
    parser.add_argument("--tree", action="append", default=[],
                        help="a directory holding a hookd package (repeatable; the first is "
                             "the reference)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--calls", type=int, default=None, help="override N of every scenario")
    parser.add_argument("--out", default=None, help="write every row as JSON here")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
