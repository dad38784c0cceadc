"""One API call in flight: parameters, caller, response and the API-event material.

This is ``RequestAttributes`` + ``ParamList`` + ``Request::success_response`` /
``Request::failure_response`` / ``Request::failure_message`` from oned 6.8.3
(``include/Request.h``, ``src/rm/Request.cc``):

* parameters are read with the exact type checks of ``xmlrpc_c::paramList`` (a wrong type
  or a missing parameter raises the ``-501`` fault with xmlrpc-c's message);
* success is ``[true, value, 0]``; failure is ``[false, "[method] message", code,
  resp_id, i8 replication_idx]`` with the message shapes of ``failure_message``;
* ``retval_xml`` collects the OUT parameters for the API hook message (error message in
  CDATA, an XML result inserted raw). oned 7.4 writes the error message as it is, not
  escaped (``Request::make_xml_response``, ``include/Request.h`` at release-7.4.0): a
  message with ``<`` or ``&`` makes its API event invalid XML (``error_cdata=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hookd.testing.events import out_parameter
from hookd.testing.xmlrpc_protocol import FAULT_TYPE, I8, DateTime, XmlRpcFault

# Request::ErrorCode (include/Request.h)
SUCCESS = 0x0000
AUTHENTICATION = 0x0100
AUTHORIZATION = 0x0200
NO_EXISTS = 0x0400
ACTION = 0x0800
XML_RPC_API = 0x1000
INTERNAL = 0x2000
ALLOCATE = 0x4000
LOCKED = 0x8000
REPLICATION = 0x10000

ERROR_CODES = {
    "authentication": AUTHENTICATION,
    "authorization": AUTHORIZATION,
    "no_exists": NO_EXISTS,
    "action": ACTION,
    "api": XML_RPC_API,
    "internal": INTERNAL,
    "allocate": ALLOCATE,
    "locked": LOCKED,
    "replication": REPLICATION,
}

# Request::object_name (src/rm/Request.cc): human names used in error messages.
OBJECT_NAMES = {
    "image": "image",
    "template": "virtual machine template",
    "datastore": "datastore",
    "host": "host",
    "cluster": "cluster",
    "market": "marketplace",
    "marketapp": "marketplaceapp",
    "user": "user",
    "zone": "zone",
    "system": "-",
}

# PoolObjectSQL::type_to_str: the object type in authorization messages.
OBJECT_TYPES = {
    "image": "IMAGE",
    "template": "TEMPLATE",
    "datastore": "DATASTORE",
    "host": "HOST",
    "cluster": "CLUSTER",
    "market": "MARKETPLACE",
    "marketapp": "MARKETPLACEAPP",
    "user": "USER",
}


class RequestFailed(Exception):
    """Raised by handlers to end the call with ``failure_response(code)``."""

    def __init__(self, code: int, message: str = "", *, resp_id: int | None = None,
                 resp_obj: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.resp_id = resp_id
        self.resp_obj = resp_obj


class Params:
    """``xmlrpc_c::paramList`` access with its type checks."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def _at(self, index: int) -> Any:
        if index >= len(self.values):
            raise XmlRpcFault(FAULT_TYPE, "Not enough parameters")
        return self.values[index]

    def get_int(self, index: int) -> int:
        value = self._at(index)
        if isinstance(value, bool | I8) or not isinstance(value, int):
            raise XmlRpcFault(FAULT_TYPE, "Parameter that is supposed to be integer is not")
        return value

    def get_bool(self, index: int) -> bool:
        value = self._at(index)
        if not isinstance(value, bool):
            raise XmlRpcFault(FAULT_TYPE, "Parameter that is supposed to be boolean is not")
        return value

    def get_str(self, index: int) -> str:
        value = self._at(index)
        if not isinstance(value, str):
            raise XmlRpcFault(FAULT_TYPE, "Parameter that is supposed to be a string is not")
        return value

    def as_string(self, index: int) -> str:
        """``ParamList::get_value_as_string``: how an IN parameter appears in API events."""
        if index == 0:
            return "****"
        value = self.values[index]
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int | str):
            return str(value)
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, DateTime):
            return ""
        return ""


@dataclass
class Call:
    """``RequestAttributes`` for one call."""

    method: str
    params: Params
    auth_object: str
    uid: int = -1
    gid: int = -1
    uname: str = ""
    gname: str = ""
    group_ids: set[int] = field(default_factory=set)
    req_id: int = 0
    resp_id: int = -1
    resp_obj: str | None = None
    resp_msg: str = ""
    extra_xml: str = ""
    success: bool = False
    response: list[Any] | None = None
    retval_xml: str = ""
    error_cdata: bool = True

    @property
    def is_admin(self) -> bool:
        return self.uid == 0 or 0 in self.group_ids

    # -- Request::success_response -------------------------------------------------------
    def succeed(self, value: int | str | bool) -> None:
        rendered = ("true" if value else "false") if isinstance(value, bool) else str(value)
        self.response = [True, value, SUCCESS]
        self.retval_xml = (
            out_parameter(1, "true") + out_parameter(2, rendered) + out_parameter(3, "0")
        )
        self.success = True

    # -- Request::failure_response -------------------------------------------------------
    def fail(self, code: int, message: str | None = None) -> None:
        text = self.failure_message(code) if message is None else message
        self.response = [False, text, code, self.resp_id, I8(-1)]
        self.retval_xml = (
            out_parameter(1, "false")
            # 6.8.3: make_parameter(oss, 2, one_util::escape_xml(str_val)) (src/rm/Request.cc:757)
            # 7.4.0: make_parameter(oss, 2, value), unescaped (include/Request.h:222-262)
            + out_parameter(2, f"<![CDATA[{text}]]>" if self.error_cdata else text)
            + out_parameter(3, str(code))
            + out_parameter(4, str(self.resp_id))
        )
        self.success = False

    def failure_message(self, code: int) -> str:
        """``Request::failure_message``."""
        obname = OBJECT_NAMES.get(self.resp_obj or self.auth_object, "-")
        head = f"[{self.method}] "
        if code == AUTHORIZATION:
            if not self.resp_msg:
                return f"{head}User [{self.uid}] not authorized to perform action on {obname}."
            return f"{head}User [{self.uid}] : {self.resp_msg}."
        if code == AUTHENTICATION:
            return f"{head}User couldn't be authenticated, aborting call."
        if code in (ACTION, XML_RPC_API, INTERNAL):
            return head + self.resp_msg
        if code == NO_EXISTS:
            if self.resp_id != -1:
                return f"{head}Error getting {obname} [{self.resp_id}]."
            return f"{head}Error getting {obname} Pool."
        if code == ALLOCATE:
            text = f"{head}Error allocating a new {obname}."
            return f"{text} {self.resp_msg}" if self.resp_msg else text
        if code == LOCKED:
            text = f"{head}The resource {obname} is locked."
            return f"{text} [{self.resp_id}]." if self.resp_id != -1 else text
        if code == REPLICATION:
            suffix = f": {self.resp_msg}." if self.resp_msg else "."
            return f"{head}Error replicating log entry -1{suffix}"
        return head + self.resp_msg

    def fail_from(self, error: RequestFailed) -> None:
        if error.resp_id is not None:
            self.resp_id = error.resp_id
        if error.resp_obj is not None:
            self.resp_obj = error.resp_obj
        self.resp_msg = error.message
        self.fail(error.code)
