"""pyone's bindings versus lxml on an image pool document as oned serialises it.

``python -m benchmarks.pool_parse [--images 100000] [--repeat 1]`` (also the runner's
``pool_parse`` scenario). The document is ``one.imagepool.info(-2, -1, -1)`` as the
simulator answers it (oned 6.8.3's serialisation) for a pool shaped like the scale
scenario's: 10% container images from the Docker Hub app, 90% ordinary disks. Each parser
runs in a fresh process that first loads the document, so the figures do not mix:

* ``pyone``: ``pyone.bindings.parseString(document)``, what every pyone XML result goes
  through (lxml's ``ETCompatXMLParser`` plus a generateDS object per element);
* ``lxml``: ``hookd.xmlsafe.parse(document)``, hookd's hardened ``lxml.etree.fromstring``;
* ``lxml+facts``: the same plus :class:`handlers.facts.ImageFacts` for every image, which is
  all hookd keeps (hookd reads pools in pages of ``one.page_size`` = 2,000, so it never
  holds a whole 100,000-image tree; this row bounds the whole-document case).

Time is wall time of the parse (best of ``--repeat``), memory is the peak resident set
growth during the first parse (VmHWM reset through /proc/self/clear_refs after loading the
document, minus VmRSS before): lxml allocates in C, where tracemalloc sees nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import REPO_ROOT, child_env
from hookd import documents

PARSERS = ("pyone", "lxml", "lxml+facts")


def build_document(images: int, workdir: Path, *, ready_delay: float = 0.05) -> Path:
    """Populate a fresh simulator and save its image pool document (UTF-8)."""
    from benchmarks.pools import container_pool, plain_pool
    from benchmarks.procs import SimProcess

    sim = SimProcess(ready_delay=ready_delay, workdir=workdir)
    try:
        containers = round(images * 0.1)
        container_pool(sim, containers, "pp-c", state="READY")
        plain_pool(sim, images - containers, 0, "pp-p")
        ok, document, *_ = sim.client.call("one.imagepool.info", -2, -1, -1)
        if not ok:
            raise RuntimeError(f"one.imagepool.info failed: {document}")
    finally:
        sim.stop()
    path = workdir / "imagepool.xml"
    path.write_text(str(document), encoding="utf-8")
    return path


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(name: str, path: Path, repeat: int) -> dict[str, Any]:
    """One parser, in this process."""
    import pyone.bindings

    from hookd.documents import pool_items
    from hookd.xmlsafe import parse

    data = path.read_bytes()
    gc.collect()
    best = float("inf")
    peak_kb = 0
    reset = False
    items = 0
    for attempt in range(max(1, repeat)):
        rss0 = _rss()
        if attempt == 0:
            reset = _reset_hwm()
        started = time.perf_counter()
        if name == "pyone":
            root: Any = pyone.bindings.parseString(data)
            items = len(root.IMAGE)
        elif name == "lxml":
            root = parse(data)
            items = len(root)
        else:
            root = parse(data)
            facts = [documents.image(e) for e in pool_items(root, "IMAGE_POOL", "IMAGE")]
            items = len(facts)
        best = min(best, time.perf_counter() - started)
        if attempt == 0:
            peak_kb = _hwm() - rss0
        del root
        gc.collect()
    return {"parser": name, "seconds": best, "peak_rss_growth_mb": peak_kb * 1024 / 1e6,
            "hwm_reset": reset, "images": items, "document_mb": len(data) / 1e6,
            "repeat": max(1, repeat)}


def _rss() -> int:
    return status_kb_self("VmRSS")


def _hwm() -> int:
    return status_kb_self("VmHWM")


def status_kb_self(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def compare(path: Path, *, repeat: int = 1) -> dict[str, Any]:
    """Run every parser in its own process on ``path``."""
    rows: dict[str, Any] = {}
    for name in PARSERS:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.pool_parse", "--worker", name,
             "--repeat", str(repeat), str(path)],
            capture_output=True, text=True, env=child_env(), cwd=REPO_ROOT, check=False)
        if proc.returncode != 0:
            rows[name] = {"error": proc.stderr[-2000:]}
            continue
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {"document_mb": path.stat().st_size / 1e6, "parsers": rows,
                           "method": __doc__.split("\n\n", 2)[2].strip() if __doc__ else ""}
    pyone_row, lxml_row = rows.get("pyone", {}), rows.get("lxml", {})
    if "seconds" in pyone_row and "seconds" in lxml_row:
        out["pyone_over_lxml_time"] = pyone_row["seconds"] / lxml_row["seconds"]
        out["pyone_over_lxml_memory"] = (pyone_row["peak_rss_growth_mb"]
                                         / max(1e-9, lxml_row["peak_rss_growth_mb"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pool_parse")
    p.add_argument("--worker", choices=PARSERS, help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("document", nargs="?", type=Path, help="an existing pool document")
    args = p.parse_args(argv)
    if args.worker:
        if args.document is None:
            p.error("--worker needs a document")
        print(json.dumps(worker(args.worker, args.document, args.repeat)))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hookd-pool-parse-") as tmp:
        workdir = args.workdir or Path(tmp)
        path = args.document or build_document(args.images, workdir)
        print(json.dumps(compare(path, repeat=args.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
