"""The ``sim.*`` XML-RPC namespace: controls for a simulator running in another process.

Never under ``one.*``; no session. Values travel as plain XML-RPC: ``None`` results are
``true``, an absent optional ID is ``-1`` and an absent optional string is ``""``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookd.testing.simulator import Simulator


def _ok(fn: Callable[..., object]) -> Callable[..., bool]:
    def wrapped(*args: Any) -> bool:
        fn(*args)
        return True

    return wrapped


def _opt_str(value: str) -> str | None:
    return value if value != "" else None


def build(sim: Simulator) -> dict[str, Callable[..., Any]]:
    """Map ``sim.<name>`` to callables of ``sim``."""
    c = sim.controls

    def export_app(app_id: int, ds_id: int, name: str = "", vm_name: str = "",
                   tag: str = "") -> list[int]:
        image_id, template_id = sim.export_app(app_id, ds_id, _opt_str(name),
                                               _opt_str(vm_name), _opt_str(tag))
        return [image_id, -1 if template_id is None else template_id]

    def fail_next(method: str, mode: str, count: int = 1, seconds: float = 0.0,
                  code: int | str = 0, message: str = "Simulated failure") -> bool:
        c.fail_next(method, mode, count, seconds=float(seconds), code=code, message=message)
        return True

    def fail_next_ready(image_id: int = -1, message: str = "") -> bool:
        if message:
            c.fail_next_ready(None if image_id < 0 else image_id, message)
        else:
            c.fail_next_ready(None if image_id < 0 else image_id)
        return True

    def add_datastore(name: str, ds_type: str = "IMAGE_DS", ds_mad: str = "fs",
                      tm_mad: str = "shared", cluster_ids: list[int] | None = None,
                      template: str = "") -> int:
        return c.add_datastore(name, ds_type, ds_mad=ds_mad, tm_mad=tm_mad,
                               cluster_ids=tuple(cluster_ids or [0]), template=template)

    def add_app(market_id: int, name: str, source: str, apptemplate: str = "",
                vmtemplate: str = "", size_mb: int = 2048) -> int:
        return c.add_app(market_id, name, source, apptemplate=apptemplate,
                         vmtemplate=_opt_str(vmtemplate), size_mb=size_mb)

    def add_host(name: str, vm_mad: str, cluster_id: int, im_mad: str = "") -> int:
        return c.add_host(name, vm_mad, cluster_id, _opt_str(im_mad))

    def bulk_templates(count: int, text: str, image_ids: list[int] | None = None,
                       name_pattern: str = "bulk-template-{i}") -> list[int]:
        return c.bulk_templates(count, text, image_ids or None, name_pattern)

    def start_person_editor(template_ids: list[int], rate: float, vector: str = "CONTEXT",
                            key: str = "SSH_PUBLIC_KEY", seed: int = 0) -> bool:
        c.start_person_editor(template_ids, float(rate), vector=vector, key=key, seed=seed)
        return True

    def stop_person_editor() -> list[list[Any]]:
        return [[t, v, w] for t, v, w in c.stop_person_editor()]

    return {
        "sim.add_user": c.add_user,
        "sim.add_kernel_image": c.add_kernel_image,
        "sim.person_edit": c.person_edit,
        "sim.edit_after_read": _ok(c.edit_after_read),
        "sim.raced": lambda: [[t, v, w] for t, v, w in c.raced()],
        "sim.start_person_editor": start_person_editor,
        "sim.stop_person_editor": stop_person_editor,
        "sim.info": sim.info,
        "sim.seed_info": sim.seed_info_dict,
        "sim.wait_image_deleted": lambda i, t=5.0: sim.wait_image_deleted(i, float(t)),
        "sim.image_xml": sim.image_xml,
        "sim.template_xml": sim.template_xml,
        "sim.wait_image_state": lambda i, s, t=5.0: sim.wait_image_state(i, s, float(t)),
        "sim.export_app": export_app,
        "sim.set_latency": _ok(lambda m, s: c.set_latency(m, float(s))),
        "sim.fail_next": fail_next,
        "sim.clear_faults": _ok(c.clear_faults),
        "sim.counters": c.counters,
        "sim.reset_counters": _ok(c.reset_counters),
        # XML-RPC structs need string keys.
        "sim.template_changes": lambda kind="vmtemplate": {
            str(k): v for k, v in c.template_changes(kind).items()},
        "sim.lock": _ok(c.lock),
        "sim.unlock": _ok(c.unlock),
        "sim.set_image_state": _ok(c.set_image_state),
        "sim.set_image_error": _ok(c.set_image_error),
        "sim.fail_next_ready": fail_next_ready,
        "sim.finish_transfers": c.finish_transfers,
        "sim.drop_events": _ok(c.drop_events),
        "sim.restart_publisher": _ok(lambda d=0.5, w=True: c.restart_publisher(float(d), w)),
        "sim.freeze_publisher": _ok(c.freeze_publisher),
        "sim.thaw_publisher": _ok(c.thaw_publisher),
        "sim.publisher_stats": c.publisher_stats,
        "sim.set_raft_role": _ok(c.set_raft_role),
        "sim.bulk_images": c.bulk_images,
        "sim.bulk_templates": bulk_templates,
        "sim.add_cluster": c.add_cluster,
        "sim.add_host": add_host,
        "sim.add_datastore": add_datastore,
        "sim.add_marketplace": c.add_marketplace,
        "sim.add_app": add_app,
    }
