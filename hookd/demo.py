"""``hookd demo``: the whole job, with nothing else installed: the built-in simulator and an
in-process registry, the real hookd service, container-image exports to KVM, Firecracker, LXC
and mixed clusters, and each VM template before and after hookd fixed it.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from handlers.plan import script_summary
from handlers.template import Template
from hookd import documents
from hookd.xmlsafe import parse

# A template a person writes for an imported image, naming no hypervisor.
_PERSONAL = 'NAME="debian-mine"\nCPU="1"\nMEMORY="512"\nDISK=[IMAGE_ID="{}"]\n'


def _flatten(template: Template) -> dict[str, str]:
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    for attr in template:
        if attr.name == "HOOKD":
            continue
        if isinstance(attr.value, str):
            out[attr.name] = attr.value
            continue
        n = counts.get(attr.name, 0)
        counts[attr.name] = n + 1
        label = attr.name if attr.name not in ("DISK", "NIC") else f"{attr.name}[{n}]"
        for key, value in attr.value.items:
            out[f"{label}/{key}"] = value
    return out


def _template_of(xml: str) -> Template:
    return documents.template(parse(xml).find("TEMPLATE"))


def diff(before_xml: str, after_xml: str) -> list[tuple[str, str | None, str | None]]:
    before, after = _flatten(_template_of(before_xml)), _flatten(_template_of(after_xml))
    keys = sorted(set(before) | set(after))
    return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]


def _image_attr(xml: str, name: str) -> str | None:
    return _template_of(xml).get(name)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def run_demo(*, one_version: str = "6.8", verbose: bool = False,
             out: TextIO = sys.stdout) -> int:
    from hookd.config import from_mapping
    from hookd.daemon import Daemon
    from hookd.history import run_history, shorten
    from hookd.testing import Simulator
    from hookd.testing.daemon_config import simulator_config
    from hookd.testing.registry import seeded_registry

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hookd-demo-"))
    registry = seeded_registry()  # the Docker Hub apps' image configs
    sim = Simulator(one_version=one_version, ready_delay=0.3, registry=registry.host)
    sim.start()
    log_file = work / "hookd.log"
    is_7 = one_version.startswith("7")
    config = from_mapping(simulator_config(
        work, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url, session=sim.session, registry=registry,
        kernels={"kvm": "kernel-kvm"} if is_7 else None,
        events={"heartbeat_interval": 1.0, "heartbeat_timeout": 3.0},
        log={"file": str(log_file), "format": "json"},
        hypervisors={"prefer": ["kvm", "firecracker", "lxc"]}))
    console: TextIO = out if verbose else io.StringIO()
    daemon = Daemon(None, config=config, log_stream=console)
    thread = threading.Thread(target=daemon.run, name="hookd-demo", daemon=True)
    print(f"hookd demo: OpenNebula {sim.info()['one_version']} simulator at {sim.xmlrpc_url} "
          f"(events {sim.zmq_url}); registry {registry.url}", file=out)
    thread.start()
    try:
        _wait(lambda: daemon.first_sweep_done, 15, "hookd's first sweep")
        print(f"hookd is running: {daemon.status_text}\n", file=out)
        seed = sim.seed_info
        if is_7:
            # 7.x: only Linux Containers, whose export pins the template to LXC. On KVM
            # hosts only, hookd re-targets it to KVM; on LXC or mixed, LXC runs it as it is
            # (and a person's template on the mixed cluster gets the preferred KVM).
            jobs = [("Linux Containers", "lxc/debian_bookworm", "kvm-images", "KVM"),
                    ("Linux Containers", "lxc/alpine_3.19", "lxc-images", "LXC"),
                    ("Linux Containers", "lxc/debian_bookworm", "mixed-images", "KVM+LXC")]
        else:
            turnkey = next(k for k in seed.apps if k.startswith("turnkey/"))
            # TurnKey and Linux Containers templates require HYPERVISOR="lx*" (their
            # marketplace's VM template): they go to LXC hosts; Docker Hub to KVM and
            # Firecracker. The mixed cluster shows the choice among several hypervisors.
            jobs = [("Docker Hub", "dockerhub/nginx", "kvm-images", "KVM"),
                    ("Docker Hub", "dockerhub/redis", "fc-images", "Firecracker"),
                    ("TurnKey", turnkey, "lxc-images", "LXC"),
                    ("Linux Containers", "lxc/debian_bookworm", "mixed-images",
                     "KVM+LXC+Firecracker"),
                    ("Docker Hub", "dockerhub/httpd", "mixed-images", "KVM+LXC+Firecracker")]
        exports = []
        for market, app_key, ds_name, hv in jobs:
            app_id, ds_id = seed.apps[app_key], seed.datastores[ds_name]
            name = app_key.split("/", 1)[1].split("_")[0] + "-" + ds_name.split("-")[0]
            image_id, template_id = sim.export_app(app_id, ds_id, name=name)
            if template_id is None:
                raise RuntimeError(f"export of {app_key} created no VM template")
            before = sim.template_xml(template_id)
            exports.append((market, app_key, ds_name, hv, image_id, template_id, before))
            print(f"exported {market} app {app_key!r} to datastore {ds_name} ({hv} hosts): "
                  f"image {image_id}, VM template {template_id}", file=out)
        if is_7:
            image_id = exports[-1][4]
            ok, template_id = sim.call("one.template.allocate", _PERSONAL.format(image_id))[:2]
            if not ok:
                raise RuntimeError(f"could not create the demo's own template: {template_id}")
            exports.append(("a person's", "template for the same image", "mixed-images",
                            "KVM+LXC", image_id, template_id, sim.template_xml(template_id)))
            print(f"created a person's VM template {template_id} for image {image_id} "
                  f"(no HYPERVISOR, no kernel)", file=out)
        print(file=out)
        last_of_image = {entry[4]: n for n, entry in enumerate(exports)}
        for n, (market, app_key, _ds, hv, image_id, template_id, before) in enumerate(exports):
            _wait(lambda i=image_id, t=template_id: (
                      _image_attr(sim.image_xml(i), "HOOKD_STATUS") is not None
                      and str(t) in (_image_attr(sim.image_xml(i), "HOOKD_TEMPLATES") or "")),
                  15, f"hookd to handle image {image_id}")
            after = sim.template_xml(template_id)
            image = sim.image_xml(image_id)
            status = _image_attr(image, "HOOKD_STATUS")
            # The image's reason covers all its templates: shown once, with the last.
            reason = _image_attr(image, "HOOKD_REASON") if last_of_image[image_id] == n else None
            print(f"== {market} {app_key} on {hv}: image {image_id} READY -> HOOKD_STATUS="
                  f"{status}" + (f" ({reason})" if reason else ""), file=out)
            changes = diff(before, after)
            if not changes:
                print(f"   VM template {template_id}: nothing to change (its marketplace "
                      f"template already sends it to LXC, which runs the image as it is)"
                      if status == "applied" else
                      f"   VM template {template_id}: left as it is", file=out)
            else:
                print(f"   VM template {template_id}, before -> after:", file=out)
            for key, old, new in changes:
                print(f"     {key:32} {shorten(old, 60)}\n     {'':32} -> {shorten(new, 60)}",
                      file=out)
                if key.endswith("START_SCRIPT_BASE64") and new:
                    print(f"     {'':32}    ({script_summary(new)}: it starts the image's "
                          f"Entrypoint+Cmd as a service - hookd start-script --template "
                          f"{template_id} shows it readable)", file=out)
            print(file=out)
        print("What hookd changed (hookd history --log " + str(log_file) + "):", file=out)
        run_history(None, log_file=str(log_file), out=out)
    except Exception:  # noqa: BLE001 - any failure: shown, exit 1
        # The embedded daemon routes uncaught exceptions into its own log: say it here.
        print(f"hookd demo failed:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    finally:
        daemon.request_stop()
        thread.join(timeout=25)
        sim.stop()
        registry.stop()
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s (files in {work})", file=out)
    return 0
