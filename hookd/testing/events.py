"""HOOK_MESSAGE documents and the keys the hook manager driver publishes them under.

* STATE messages: ``HookStateImage::format_message`` (``src/hm/HookStateImage.cc``) and
  ``HookStateHost::format_message`` (``src/hm/HookStateHost.cc``): ``HOOK_TYPE``,
  ``HOOK_OBJECT``, the state *name*, ``REMOTE_HOST`` (hosts only), ``RESOURCE_ID``, then
  the object XML. No XML declaration; single-line base64 (``ssl_util::base64_encode``).
* API messages: ``HookAPI::format_message`` (``src/hm/HookAPI.cc``): IN parameters are
  written unescaped (``ParamList::get_value_as_string`` in ``include/Request.h``: the
  session as ``****``, booleans as ``1``/``0``), then the OUT parameters built by
  ``Request::success_response`` / ``failure_response`` (``src/rm/Request.cc``), then
  ``EXTRA``. Read-only calls listed in ``HookAPI::unsupported_calls`` produce no message.
* Keys: ``one_hm.rb#key`` (``src/hm_mad/one_hm.rb``): ``API <call> <1|0>`` and, for state
  changes, ``<OBJ> <id>/<STATE>/<LCM> `` and ``STATE <OBJ>/<STATE>/<LCM>/<id> `` (trailing
  space), each prefixed with ``EVENT `` when published.
"""

from __future__ import annotations

import base64
import re

# HookAPI::unsupported_calls (src/hm/HookAPI.cc, release-6.8.3)
UNSUPPORTED_API_CALLS = frozenset(
    {
        "one.vm.info", "one.vmpool.info", "one.vmpool.infoextended", "one.template.info",
        "one.templatepool.info", "one.host.info", "one.hostpool.info", "one.group.info",
        "one.grouppool.info", "one.groupquota.info", "one.vn.info", "one.vnpool.info",
        "one.user.info", "one.userpool.info", "one.userquota.info", "one.datastore.info",
        "one.datastorepool.info", "one.image.info", "one.imagepool.info", "one.acl.info",
        "one.vntemplate.info", "one.vntemplatepool.info", "one.cluster.info",
        "one.clusterpool.info", "one.document.info", "one.documentpool.info",
        "one.zone.info", "one.zonepool.info", "one.secgroup.info", "one.secgrouppool.info",
        "one.vmgroup.info", "one.vmgrouppool.info", "one.vdc.info", "one.vdcpool.info",
        "one.vrouter.info", "one.vrouterpool.info", "one.market.info", "one.marketpool.info",
        "one.marketapp.info", "one.marketapppool.info", "one.hook.info",
        "one.hookpool.info", "one.hooklog.info",
    }
)


def encode(xml: str) -> str:
    """Single-line standard base64 of the UTF-8 document."""
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


def state_message(
    hook_object: str,
    state: str,
    resource_id: int,
    object_xml: str,
    *,
    remote_host: str | None = None,
) -> str:
    """Base64 STATE HOOK_MESSAGE for an IMAGE or HOST."""
    remote = f"<REMOTE_HOST>{remote_host}</REMOTE_HOST>" if remote_host is not None else ""
    return encode(
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE>"
        f"<HOOK_OBJECT>{hook_object}</HOOK_OBJECT><STATE>{state}</STATE>{remote}"
        f"<RESOURCE_ID>{resource_id}</RESOURCE_ID>{object_xml}</HOOK_MESSAGE>"
    )


def out_parameter(position: int, value: str) -> str:
    """``make_parameter`` in ``src/rm/Request.cc``."""
    return (
        f"<PARAMETER><POSITION>{position}</POSITION><TYPE>OUT</TYPE>"
        f"<VALUE>{value}</VALUE></PARAMETER>"
    )


def api_message(
    call: str, success: bool, in_values: list[str], retval_xml: str, extra_xml: str
) -> str:
    """Base64 API HOOK_MESSAGE; ``in_values`` already rendered (session first)."""
    params = "".join(
        f"<PARAMETER><POSITION>{i + 1}</POSITION><TYPE>IN</TYPE>"
        f"<VALUE>{value}</VALUE></PARAMETER>"
        for i, value in enumerate(in_values)
    )
    return encode(
        f"<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>{call}</CALL>"
        f"<CALL_INFO><RESULT>{1 if success else 0}</RESULT><PARAMETERS>{params}"
        f"{retval_xml}</PARAMETERS><EXTRA>{extra_xml}</EXTRA></CALL_INFO></HOOK_MESSAGE>"
    )


def _first(tag: str, xml: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", xml, re.DOTALL)
    return match.group(1) if match else None


def keys_for(message_b64: str) -> list[str]:
    """The keys ``one_hm.rb`` publishes a message under (without the ``EVENT `` prefix).

    one_hm reads the fields with a lenient parser and ``//TAG`` XPaths (first match in
    document order); a first-match search on the text does the same and also works on
    API messages whose IN parameters made the XML malformed.
    """
    xml = base64.b64decode(message_b64).decode("utf-8", errors="replace")
    hook_type = _first("HOOK_TYPE", xml)
    if hook_type == "API":
        call = _first("CALL", xml) or ""
        info = xml[xml.find("<CALL_INFO>") :]
        success = _first("RESULT", info) or ""
        return [f"API {call} {success}"]
    if hook_type == "STATE":
        obj = _first("HOOK_OBJECT", xml) or ""
        state = _first("STATE", xml) or ""
        lcm = (_first("LCM_STATE", xml) or "") if obj == "VM" else ""
        resource_id = _first("RESOURCE_ID", xml) or ""
        keys = [f"{obj} {resource_id}/{state}/{lcm} ", f"STATE {obj}/{state}/{lcm}/{resource_id} "]
        service_id = _first("SERVICE_ID", xml)
        if service_id is not None:
            keys.append(f"SERVICE {service_id} ")
        return keys
    return []
