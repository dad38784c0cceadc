"""Control a simulator running in another process (``python -m hookd.testing``).

``SimulatorClient(xmlrpc_url)`` mirrors the in-process :class:`~hookd.testing.Simulator`
API: ``export_app``, ``call``, ``controls.<operation>``, ``wait_image_state``,
``image_xml``, ``template_xml``, plus ``xmlrpc_url``/``zmq_url``/``session``. Controls go
through the ``sim.*`` XML-RPC namespace of the simulator; ``call`` goes through the
``one.*`` front door with the simulator's admin session.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any, cast


class SimulatorClientError(RuntimeError):
    """A ``sim.*`` control failed on the simulator side."""


def _proxy(url: str, timeout: float | None) -> xmlrpc.client.ServerProxy:
    transport = _TimeoutTransport(timeout)
    return xmlrpc.client.ServerProxy(url, transport=transport)


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float | None) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class RemoteControls:
    """The operations of :class:`hookd.testing.controls.Controls`, over ``sim.*``."""

    def __init__(self, url: str, timeout: float | None = 120.0) -> None:
        self._url = url
        self._timeout = timeout

    def invoke(self, name: str, *params: Any) -> Any:
        """Call ``sim.<name>`` and return its result."""
        proxy = _proxy(self._url, self._timeout)
        try:
            return getattr(proxy, f"sim.{name}")(*params)
        except xmlrpc.client.Fault as fault:
            raise SimulatorClientError(fault.faultString) from fault

    def add_user(self, name: str, password: str) -> int:
        return int(self.invoke("add_user", name, password))

    def add_kernel_image(self, name: str, owner: int, datastore_id: int) -> int:
        return int(self.invoke("add_kernel_image", name, owner, datastore_id))

    def person_edit(self, template_id: int, vector: str, key: str, value: str) -> bool:
        return bool(self.invoke("person_edit", template_id, vector, key, value))

    def edit_after_read(self, template_id: int, vector: str, key: str, value: str) -> None:
        self.invoke("edit_after_read", template_id, vector, key, value)

    def raced(self) -> list[tuple[int, str, float]]:
        return [(int(t), str(v), float(w)) for t, v, w in self.invoke("raced")]

    def start_person_editor(self, template_ids: list[int], rate: float, *,
                            vector: str = "CONTEXT", key: str = "SSH_PUBLIC_KEY",
                            seed: int = 0) -> None:
        self.invoke("start_person_editor", template_ids, rate, vector, key, seed)

    def stop_person_editor(self) -> list[tuple[int, str, float]]:
        return [(int(t), str(v), float(w)) for t, v, w in self.invoke("stop_person_editor")]

    def set_latency(self, method: str, seconds: float) -> None:
        self.invoke("set_latency", method, float(seconds))

    def fail_next(self, method: str, mode: str, count: int = 1, *, seconds: float = 0.0,
                  code: int | str = 0, message: str = "Simulated failure") -> None:
        self.invoke("fail_next", method, mode, count, float(seconds), code, message)

    def clear_faults(self) -> None:
        self.invoke("clear_faults")

    def counters(self) -> dict[str, int]:
        return cast(dict[str, int], self.invoke("counters"))

    def reset_counters(self) -> None:
        self.invoke("reset_counters")

    def template_changes(self, kind: str = "vmtemplate") -> dict[int, int]:
        raw = cast(dict[str, int], self.invoke("template_changes", kind))
        return {int(k): v for k, v in raw.items()}

    def lock(self, kind: str, oid: int, level: int = 1) -> None:
        self.invoke("lock", kind, oid, level)

    def unlock(self, kind: str, oid: int) -> None:
        self.invoke("unlock", kind, oid)

    def set_image_state(self, image_id: int, state: str) -> None:
        self.invoke("set_image_state", image_id, state)

    def set_image_error(self, image_id: int,
                        message: str = "Error copying image in the datastore") -> None:
        self.invoke("set_image_error", image_id, message)

    def fail_next_ready(self, image_id: int | None = None, message: str = "") -> None:
        self.invoke("fail_next_ready", -1 if image_id is None else image_id, message)

    def finish_transfers(self) -> int:
        return int(self.invoke("finish_transfers"))

    def drop_events(self, count: int) -> None:
        self.invoke("drop_events", count)

    def restart_publisher(self, down_seconds: float = 0.5, wait: bool = True) -> None:
        self.invoke("restart_publisher", float(down_seconds), wait)

    def freeze_publisher(self) -> None:
        self.invoke("freeze_publisher")

    def thaw_publisher(self) -> None:
        self.invoke("thaw_publisher")

    def publisher_stats(self) -> dict[str, int]:
        return cast(dict[str, int], self.invoke("publisher_stats"))

    def set_raft_role(self, role: str) -> None:
        self.invoke("set_raft_role", role)

    def bulk_images(self, count: int, template_text: str, ds_id: int, state: str = "READY",
                    name_pattern: str = "bulk-image-{i}") -> list[int]:
        return cast(list[int], self.invoke("bulk_images", count, template_text, ds_id, state,
                                         name_pattern))

    def bulk_templates(self, count: int, template_text: str, image_ids: list[int] | None = None,
                       name_pattern: str = "bulk-template-{i}") -> list[int]:
        return cast(list[int], self.invoke("bulk_templates", count, template_text,
                                         image_ids or [], name_pattern))

    def add_cluster(self, name: str, template: str = "") -> int:
        return int(self.invoke("add_cluster", name, template))

    def add_host(self, name: str, vm_mad: str, cluster_id: int, im_mad: str | None = None) -> int:
        return int(self.invoke("add_host", name, vm_mad, cluster_id, im_mad or ""))

    def add_datastore(self, name: str, ds_type: str = "IMAGE_DS", *, ds_mad: str = "fs",
                      tm_mad: str = "shared", cluster_ids: tuple[int, ...] | list[int] = (0,),
                      template: str = "") -> int:
        return int(self.invoke("add_datastore", name, ds_type, ds_mad, tm_mad,
                             list(cluster_ids), template))

    def add_marketplace(self, name: str, market_mad: str, template: str = "") -> int:
        return int(self.invoke("add_marketplace", name, market_mad, template))

    def add_app(self, market_id: int, name: str, source: str, *, apptemplate: str = "",
                vmtemplate: str | None = None, size_mb: int = 2048) -> int:
        return int(self.invoke("add_app", market_id, name, source, apptemplate,
                             vmtemplate or "", size_mb))


class SimulatorClient:
    """Remote handle on a simulator started with ``python -m hookd.testing``."""

    def __init__(self, xmlrpc_url: str, timeout: float | None = 120.0) -> None:
        self.xmlrpc_url = xmlrpc_url
        self._timeout = timeout
        self.controls = RemoteControls(xmlrpc_url, timeout)
        info = cast(dict[str, str], self.controls.invoke("info"))
        self.zmq_url = info["zmq_url"]
        self.session = info["session"]
        self.one_version = info["one_version"]

    def export_app(self, app_id: int, datastore_id: int, name: str | None = None,
                   vmtemplate_name: str | None = None,
                   tag: str | None = None) -> tuple[int, int | None]:
        image_id, template_id = self.controls.invoke(
            "export_app", app_id, datastore_id, name or "", vmtemplate_name or "", tag or ""
        )
        return int(image_id), (None if template_id == -1 else int(template_id))

    def call(self, method: str, *params: Any) -> list[Any]:
        """Raw response array of ``method`` called with the admin session."""
        proxy = _proxy(self.xmlrpc_url, self._timeout)
        return list(getattr(proxy, method)(self.session, *params))

    def wait_image_state(self, image_id: int, state: str, timeout: float = 5.0) -> bool:
        return bool(self.controls.invoke("wait_image_state", image_id, state,
                                       float(timeout)))

    def wait_image_deleted(self, image_id: int, timeout: float = 5.0) -> bool:
        return bool(self.controls.invoke("wait_image_deleted", image_id, float(timeout)))

    def image_xml(self, image_id: int) -> str:
        return str(self.controls.invoke("image_xml", image_id))

    def template_xml(self, template_id: int) -> str:
        return str(self.controls.invoke("template_xml", template_id))

    def seed_info(self) -> dict[str, dict[str, int]]:
        return cast(dict[str, dict[str, int]], self.controls.invoke("seed_info"))
