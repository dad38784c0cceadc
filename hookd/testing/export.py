"""``onemarketapp export`` as OpenNebula's Ruby client performs it, through the front door.

``MarketPlaceAppExt#export`` / ``#export_image`` (``src/oca/ruby/opennebula/
marketplaceapp_ext.rb`` at release-6.8.3, summarised in container-images-and-boot.md
§1.6), call by call over XML-RPC with the admin session:

1. ``one.marketapp.info``: the app must be READY (``App is not READY``) and of type IMAGE;
2. image template = base64-decoded ``APPTEMPLATE64`` + the heredoc ``NAME``/``FROM_APP``
   lines (16 spaces of indentation kept by ``<<-EOT``) + ``URL_ARGS="tag=<tag>"`` when a
   tag is given; a ``TYPE=KERNEL|CONTEXT`` template goes to the first FILE_DS
   (``one.datastorepool.info``); ``one.datastore.info`` on the target;
3. ``one.image.allocate``; ``one.image.info``; drop ``TEMPLATE/FORMAT`` and
   ``TEMPLATE/DRIVER`` and send the TEMPLATE element back with ``one.image.update``
   (replace), serialised the way Nokogiri's ``to_s`` formats it;
4. when the app has ``VMTEMPLATE64``: ``one.template.allocate`` with the decoded template +
   ``NAME`` and ``DISK = [ IMAGE_ID = "<id>" ]`` (20 spaces, after an empty line).

So an export produces exactly the API calls, API events and state events of a real one.
The 7.x client (release-7.4.0) has no ``--tag``/``URL_ARGS`` and no vCenter branch, so it
does not read the target datastore either, and it calls ``one.image.allocate`` with its
fourth parameter ``false`` (``Image#allocate(description, ds_id, no_check_capacity=false)``,
``src/oca/ruby/opennebula/image.rb:123-124``). Measured on a real oned 7.4.0 with
``onemarketapp export`` (tests/simulator/real_oned_7_4.md): the same calls, events, image
and VM template as this exporter produces in the 7.4 flavour.
"""

from __future__ import annotations

import base64
import re
import xmlrpc.client
from typing import Any

from hookd.testing import xmltree


class ExportError(RuntimeError):
    """The export failed; ``image_id`` is set when the image had been created."""

    def __init__(self, message: str, image_id: int | None = None) -> None:
        super().__init__(message)
        self.image_id = image_id


def _serialize(node: xmltree.Node, indent: int, out: list[str]) -> None:
    """libxml2 ``xmlNodeDumpOutput`` with ``format=1`` (Nokogiri ``DEFAULT_XML``)."""
    if isinstance(node, xmltree.Text):
        out.append(node.data.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        return
    if isinstance(node, xmltree.CData):
        out.append(f"<![CDATA[{node.data}]]>")
        return
    if isinstance(node, xmltree.Comment):
        out.append(f"<!--{node.data}-->")
        return
    if isinstance(node, xmltree.ProcessingInstruction):
        out.append(f"<?{node.target} {node.data}?>")
        return
    if not node.children:
        out.append(f"<{node.name}/>")
        return
    only_elements = all(isinstance(c, xmltree.Element) for c in node.children)
    out.append(f"<{node.name}>")
    for child in node.children:
        if only_elements:
            out.append("\n" + "  " * (indent + 1))
        _serialize(child, indent + 1, out)
    if only_elements:
        out.append("\n" + "  " * indent)
    out.append(f"</{node.name}>")


def template_xml(image_xml: str, drop: tuple[str, ...]) -> str:
    """``image.template_xml`` after ``delete_element('TEMPLATE/<name>')`` for ``drop``."""
    root = xmltree.parse(image_xml)
    template = root.first("TEMPLATE")
    if template is None:
        return "<TEMPLATE/>"
    template.children = [
        c for c in template.children if not (isinstance(c, xmltree.Element) and c.name in drop)
    ]
    out: list[str] = []
    _serialize(template, 0, out)
    return "".join(out)


class Exporter:
    """Runs exports against an XML-RPC endpoint with a given session."""

    def __init__(self, url: str, session: str, *, major: int = 6) -> None:
        self.url = url
        self.session = session
        self.major = major

    def _call(self, method: str, *params: Any) -> Any:
        proxy = xmlrpc.client.ServerProxy(self.url)
        response = getattr(proxy, method)(self.session, *params)
        if not response[0]:
            raise ExportError(str(response[1]))
        return response[1]

    def export(
        self,
        app_id: int,
        datastore_id: int,
        name: str | None = None,
        vmtemplate_name: str | None = None,
        tag: str | None = None,
    ) -> tuple[int, int | None]:
        """Export ``app_id``; return ``(image_id, template_id or None)``."""
        app = xmltree.parse(self._call("one.marketapp.info", app_id))
        state = (app.first("STATE") or xmltree.Element("STATE")).text()
        if state != "1":
            raise ExportError("App is not READY")
        app_type = (app.first("TYPE") or xmltree.Element("TYPE")).text()
        if app_type != "1":
            raise ExportError(f"App type {app_type} not supported by this exporter")
        app_name = (app.first("NAME") or xmltree.Element("NAME")).text()
        image_name = name if name is not None else app_name
        app64 = (app.first("APPTEMPLATE64") or xmltree.Element("APPTEMPLATE64")).text()
        tmpl = base64.b64decode(app64).decode("utf-8") if app64 else ""
        tmpl += (
            f'                NAME     = "{image_name}"\n'
            f'                FROM_APP = "{app_id}"\n'
        )
        if tag is not None:
            if self.major >= 7:
                raise ExportError("the OpenNebula 7.x client has no tag option")
            tmpl += f'URL_ARGS="tag={tag}"\n'
        dsid = datastore_id
        if re.search(r"^\s*TYPE\s*=\s*KERNEL|CONTEXT\s", tmpl, re.IGNORECASE | re.MULTILINE):
            pool = xmltree.parse(self._call("one.datastorepool.info"))
            files = [d for d in pool.elements()
                     if (d.first("TYPE") or xmltree.Element("TYPE")).text() == "2"]
            if files:
                dsid = int((files[0].first("ID") or xmltree.Element("ID")).text())
        is_vcenter = False
        if self.major < 7:
            ds = xmltree.parse(self._call("one.datastore.info", dsid))
            ds_template = ds.first("TEMPLATE")
            driver = ds_template.first("DRIVER") if ds_template is not None else None
            is_vcenter = driver is not None and driver.text() == "vcenter"

        if self.major >= 7:
            # 7.4.0 client: super(IMAGE_METHODS[:allocate], description, ds_id,
            # no_check_capacity) (image.rb:123-124), seen as IN 4 "0" in the API event of a
            # real oned 7.4.0. (6.8.3's image.rb:122-123 reads the same; the 6.8 flavour is
            # kept as it was: nothing recorded from 6.8.3 shows a Ruby client's export.)
            image_id = int(self._call("one.image.allocate", tmpl, dsid, False))
        else:
            image_id = int(self._call("one.image.allocate", tmpl, dsid))
        image_xml = self._call("one.image.info", image_id)
        drop = ("FORMAT", "DRIVER", "DEV_PREFIX") if is_vcenter else ("FORMAT", "DRIVER")
        try:
            self._call("one.image.update", image_id, template_xml(image_xml, drop), 0)
        except ExportError as exc:
            raise ExportError(str(exc), image_id) from exc

        template_el = app.first("TEMPLATE")
        vm64_el = template_el.first("VMTEMPLATE64") if template_el is not None else None
        if vm64_el is None:
            return image_id, None
        vm_tmpl = base64.b64decode(vm64_el.text()).decode("utf-8")
        vm_tmpl += (
            "\n"
            f'                    NAME = "{vmtemplate_name or image_name}"\n'
            f'                    DISK = [ IMAGE_ID = "{image_id}" ]\n'
        )
        try:
            template_id = int(self._call("one.template.allocate", vm_tmpl))
        except ExportError as exc:
            raise ExportError(str(exc), image_id) from exc
        return image_id, template_id
