"""The onehem way: one process per READY event, as an OpenNebula hook would run.

``python -m benchmarks.onehem_hook --config hookd.conf [--template-id N] IMAGE_TEMPLATE_B64``

``IMAGE_TEMPLATE_B64`` is what a STATE hook gets as ``ARGUMENTS="$TEMPLATE"``: the image XML
from the event, base64. The process then does what such a hook must do, with nothing kept
from one event to the next:

1. import pyone (7.0.2, the version hookd pins) and the fix logic;
2. read the image with pyone (``one.image.info``), and the template(s) that use it
   (``one.template.info`` when the template id is given; with ``--scan`` the whole template
   pool with ``one.templatepool.info``, as a hook that keeps no index has to);
3. read the facts the fix depends on, with pyone: oned's version and configuration, the
   datastores, hosts, marketplaces, the app the image came from, the kernel images; the
   image config comes from the registry (through the same on-disk cache hookd uses);
4. compute **the same fix hookd computes** (hookd's own pure planner, from the same XML
   pyone received: every result is parsed by pyone into its bindings, as a pyone hook pays
   for, and the same text is handed to hookd's fact parser);
5. write it with pyone: ``one.template.update`` and ``one.image.update`` (merge).

It prints one JSON line: seconds spent importing, working, and the number of calls.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from hookd import documents

STARTED = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onehem_hook")
    parser.add_argument("--config", required=True)
    parser.add_argument("--template-id", type=int, default=-1)
    parser.add_argument("--scan", action="store_true", help="find templates in the pool")
    parser.add_argument("template_b64")
    args = parser.parse_args(argv)

    import logging
    from pathlib import Path
    from typing import cast

    import pyone

    from handlers.facts import (
        AppFacts,
        DatastoreFacts,
        HostFacts,
        ImageFacts,
        MarketFacts,
        VmTemplateFacts,
    )
    from hookd.applier import Applier
    from hookd.client import NotFound, OneClient, OneError
    from hookd.config import load, read_session
    from hookd.documents import pool_items
    from hookd.engine import Engine
    from hookd.index import TemplateIndex
    from hookd.logs import configure_logging
    from hookd.settings import oci_resolver, planner_settings
    from hookd.world import WorldCache
    from hookd.xmlsafe import parse

    imported = time.monotonic()
    configure_logging(level="warning", stream=sys.stderr, fmt="json")
    logging.getLogger().setLevel(logging.WARNING)

    class Server(pyone.OneServer):  # type: ignore[misc]
        """pyone as a hook uses it; the raw text of the last answer is kept as well."""

        calls = 0
        last: str = ""

        def _do_request(self, method: str, params: Any) -> Any:
            Server.calls += 1
            ret = super()._do_request(method, params)
            if isinstance(ret, list) and len(ret) > 1 and isinstance(ret[1], str):
                Server.last = ret[1]
            return ret

    class PyoneClient:
        """The calls hookd's fix logic makes, through pyone."""

        def __init__(self, one: Any) -> None:
            self.one = one

        def _xml(self, fn: Any, *params: Any) -> Any:
            try:
                fn(*params)  # pyone parses the answer into its bindings
            except pyone.OneNoExistsException as exc:
                raise NotFound(str(exc)) from None
            except pyone.OneException as exc:
                raise OneError(str(exc)) from None
            # A whole template pool can exceed hookd's 256 MB per-document default.
            return parse(Server.last, max_bytes=2**31 - 1)

        def version(self) -> str:
            return str(self.one.system.version())

        def system_config(self) -> Any:
            return self._xml(self.one.system.config)

        def datastores(self) -> list[DatastoreFacts]:
            root = self._xml(self.one.datastorepool.info)
            return [documents.datastore(e)
                    for e in pool_items(root, "DATASTORE_POOL", "DATASTORE")]

        def hosts(self) -> list[HostFacts]:
            root = self._xml(self.one.hostpool.info)
            return [documents.host(e) for e in pool_items(root, "HOST_POOL", "HOST")]

        def markets(self) -> list[MarketFacts]:
            root = self._xml(self.one.marketpool.info)
            return [documents.market(e)
                    for e in pool_items(root, "MARKETPLACE_POOL", "MARKETPLACE")]

        def app(self, app_id: int) -> AppFacts:
            return documents.app(self._xml(self.one.marketapp.info, app_id))

        def image(self, image_id: int) -> ImageFacts:
            return documents.image(self._xml(self.one.image.info, image_id))

        def template(self, template_id: int) -> VmTemplateFacts:
            return documents.vm_template(
                self._xml(self.one.template.info, template_id, False, False))

        def templates(self) -> list[VmTemplateFacts]:
            root = self._xml(self.one.templatepool.info, -2, -1, -1)
            return [documents.vm_template(e)
                    for e in pool_items(root, "VMTEMPLATE_POOL", "VMTEMPLATE")]

        def update_template(self, template_id: int, template_xml: str) -> None:
            self.one.template.update(template_id, template_xml, 1)

        def update_image(self, image_id: int, template_xml: str) -> None:
            self.one.image.update(image_id, template_xml, 1)

    config = load(Path(args.config))
    client = PyoneClient(Server(config.xmlrpc, read_session(config.auth_file)))
    event_image = documents.image(parse(base64.b64decode(args.template_b64)))
    index = TemplateIndex()
    # The hook learns which templates exist (told, or by scanning the pool); hookd's engine
    # then reads the image and its templates from oned itself, as hookd does.
    found = ([client.template(args.template_id)] if not args.scan and args.template_id >= 0
             else client.templates())
    for template in found:
        index.put(template)
    as_client = cast(OneClient, client)
    world = WorldCache(as_client, kernels=config.kernels.refs(),
                       initrds=config.initrds.refs(), owner=config.kernels.owner)
    engine = Engine(as_client, world, index, Applier(as_client), planner_settings(config),
                    oci_resolver(config, world))
    result = engine.reconcile_image(event_image.id, trigger="onehem hook")
    done = time.monotonic()
    print(json.dumps({"image_id": event_image.id, "import_s": imported - STARTED,
                      "work_s": done - imported, "calls": Server.calls,
                      "templates_updated": result.templates_updated}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
