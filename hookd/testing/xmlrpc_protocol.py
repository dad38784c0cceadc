"""XML-RPC on the wire, the way oned's xmlrpc-c 1.33 (Abyss) speaks it.

* Requests are decoded into Python values that keep the XML-RPC type: ``<i4>``/``<int>``
  become :class:`int`, ``<i8>`` becomes :class:`I8`, ``<boolean>`` :class:`bool`,
  ``<string>`` or an untyped ``<value>`` :class:`str`, plus double, array, struct, nil,
  base64 and dateTime. oned reads parameters with ``xmlrpc_c::paramList::getInt`` and
  friends, which insist on the exact type; :mod:`hookd.testing.request` mirrors that.
* Responses are serialised like xmlrpc-c's ``xmlrpc_serialize_response2`` /
  ``xmlrpc_serialize_fault`` (``src/xmlrpc_serialize.c``): CRLF line breaks, ``<i4>``,
  ``<i8>``, ``<boolean>0|1</boolean>``, one array item per line, and strings escaped with
  ``&lt;`` ``&gt;`` ``&amp;`` and ``&#x0d;`` only (quotes and non-ASCII stay raw). The
  recorded ``*.response.xml`` files of oned 6.8.3 have exactly this layout.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

from hookd.testing import xmltree

CRLF = "\r\n"
PROLOGUE = '<?xml version="1.0" encoding="UTF-8"?>' + CRLF

# xmlrpc-c fault codes (include/xmlrpc-c/base.h)
FAULT_PARSE = -503
FAULT_NO_SUCH_METHOD = -506
FAULT_TYPE = -501
FAULT_INTERNAL = -500


class I8(int):
    """An XML-RPC ``<i8>`` value (64-bit integer)."""


@dataclass(frozen=True)
class DateTime:
    """An XML-RPC ``<dateTime.iso8601>`` value, kept as text."""

    value: str


class XmlRpcFault(Exception):
    """A ``<fault>`` response (``xmlrpc_c::fault``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _int32(text: str) -> int:
    value = int(text.strip())
    if not -(2**31) <= value < 2**31:
        raise ValueError("integer out of range")
    return value


def _decode_value(element: xmltree.Element) -> Any:
    typed = element.elements()
    if not typed:
        return element.text()
    node = typed[0]
    tag = node.name
    if tag in ("i4", "int"):
        return _int32(node.text())
    if tag in ("i8", "ex:i8"):
        return I8(int(node.text().strip()))
    if tag == "boolean":
        text = node.text().strip()
        if text not in ("0", "1"):
            raise ValueError("boolean must be 0 or 1")
        return text == "1"
    if tag == "string":
        return node.text()
    if tag == "double":
        return float(node.text().strip())
    if tag == "base64":
        return base64.b64decode(node.text())
    if tag == "dateTime.iso8601":
        return DateTime(node.text().strip())
    if tag in ("nil", "ex:nil"):
        return None
    if tag == "array":
        data = node.first("data")
        if data is None:
            raise ValueError("array without data")
        return [_decode_value(v) for v in data.elements() if v.name == "value"]
    if tag == "struct":
        out: dict[str, Any] = {}
        for member in node.elements():
            name = member.first("name")
            value = member.first("value")
            if member.name != "member" or name is None or value is None:
                raise ValueError("malformed struct member")
            out[name.text()] = _decode_value(value)
        return out
    raise ValueError(f"unknown value type <{tag}>")


def parse_call(body: bytes) -> tuple[str, list[Any]]:
    """Decode a ``<methodCall>``; raise :class:`XmlRpcFault` (-503) when malformed."""
    try:
        root = xmltree.parse(body)
        if root.name != "methodCall":
            raise ValueError("root element is not methodCall")
        name_el = root.first("methodName")
        if name_el is None:
            raise ValueError("no methodName")
        params: list[Any] = []
        params_el = root.first("params")
        if params_el is not None:
            for param in params_el.elements():
                value = param.first("value")
                if param.name != "param" or value is None:
                    raise ValueError("malformed param")
                params.append(_decode_value(value))
        return name_el.text().strip(), params
    except (xmltree.XmlSyntaxError, ValueError) as exc:
        raise XmlRpcFault(FAULT_PARSE, f"XML-RPC parse error: {exc}") from exc


def escape(text: str) -> str:
    """xmlrpc-c ``escapeForXml``."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace("\r", "&#x0d;")
    )


def _format_double(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError("XML-RPC cannot carry NaN or infinity")
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def encode_value(value: Any) -> str:
    """``<value>...</value>`` for one Python value."""
    if isinstance(value, bool):
        content = f"<boolean>{1 if value else 0}</boolean>"
    elif isinstance(value, I8):
        content = f"<i8>{int(value)}</i8>"
    elif isinstance(value, int):
        content = f"<i4>{value}</i4>" if -(2**31) <= value < 2**31 else f"<i8>{value}</i8>"
    elif isinstance(value, str):
        content = f"<string>{escape(value)}</string>"
    elif isinstance(value, float):
        content = f"<double>{_format_double(value)}</double>"
    elif value is None:
        content = "<nil/>"
    elif isinstance(value, bytes):
        content = f"<base64>{CRLF}{base64.b64encode(value).decode('ascii')}{CRLF}</base64>"
    elif isinstance(value, list | tuple):
        items = "".join(encode_value(v) + CRLF for v in value)
        content = f"<array><data>{CRLF}{items}</data></array>"
    elif isinstance(value, dict):
        members = "".join(
            f"<member><name>{escape(str(k))}</name>{CRLF}{encode_value(v)}</member>{CRLF}"
            for k, v in value.items()
        )
        content = f"<struct>{CRLF}{members}</struct>"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in XML-RPC")
    return f"<value>{content}</value>"


def encode_response(value: Any) -> bytes:
    """A ``<methodResponse>`` carrying ``value`` (Abyss byte layout)."""
    return (
        PROLOGUE
        + f"<methodResponse>{CRLF}<params>{CRLF}<param>{encode_value(value)}</param>{CRLF}"
        + f"</params>{CRLF}</methodResponse>{CRLF}"
    ).encode("utf-8")


def encode_fault(code: int, message: str) -> bytes:
    """A ``<fault>`` response (Abyss byte layout)."""
    struct = encode_value({"faultCode": code, "faultString": message})
    return (
        PROLOGUE
        + f"<methodResponse>{CRLF}<fault>{CRLF}{struct}{CRLF}</fault>{CRLF}"
        + f"</methodResponse>{CRLF}"
    ).encode("utf-8")
