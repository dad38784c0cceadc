"""Pool answers read as they arrive: the same objects as a whole read, in any chunking, with
oned's failures, faults and hostile documents told apart, and nothing kept once read."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from xml.sax.saxutils import escape

import pytest

from hookd.pool_stream import PoolAnswer, PoolStream, PoolStreamError

POOL = ("<IMAGE_POOL>" + "".join(
    f"<IMAGE><ID>{i}</ID><NAME>img &amp; {i}</NAME><TEMPLATE><PATH><![CDATA[docker://x?a=1&b=2]]>"
    f"</PATH></TEMPLATE></IMAGE>" for i in range(50)) + "</IMAGE_POOL>")


def answer(*values: object) -> bytes:
    """An XML-RPC methodResponse as Python's (and, in shape, xmlrpc-c's) marshaller writes it."""
    return xmlrpc.client.dumps((list(values),), methodresponse=True).encode()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def read(data: bytes, size: int, pool: str = "IMAGE_POOL", item: str = "IMAGE"
         ) -> tuple[list[tuple[str, str]], PoolAnswer | None]:
    stream = PoolStream(pool, item)
    seen = []
    for chunk in chunks(data, size):
        for element in stream.feed(chunk):
            seen.append((element.findtext("ID") or "", element.findtext("TEMPLATE/PATH") or ""))
    for element in stream.finish():
        seen.append((element.findtext("ID") or "", element.findtext("TEMPLATE/PATH") or ""))
    return seen, stream.answer


@pytest.mark.parametrize("size", [1, 7, 4096, 10**9])
def test_every_object_in_order_whatever_the_chunking(size: int) -> None:
    seen, result = read(answer(True, POOL, 0), size)
    assert [i for i, _ in seen] == [str(i) for i in range(50)]
    assert all(path == "docker://x?a=1&b=2" for _, path in seen)
    assert result == PoolAnswer(True, code=0)


def test_an_untyped_string_value_is_read_too() -> None:
    body = (b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
            b"<value><boolean>1</boolean></value><value>\n" + escape(POOL).encode() +
            b"</value><value><i4>0</i4></value></data></array></value></param></params>"
            b"</methodResponse>")
    seen, result = read(body, 100)
    assert len(seen) == 50 and result is not None and result.ok


def test_oned_failure_is_its_message_and_code() -> None:
    seen, result = read(answer(False, "[one.imagepool.info] User couldn't be authenticated, "
                                      "aborting call.", 0x100), 13)
    assert seen == []
    assert result == PoolAnswer(False, "[one.imagepool.info] User couldn't be authenticated, "
                                       "aborting call.", 0x100)


def test_xmlrpc_fault() -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(-501, "No such method"),
                               methodresponse=True).encode()
    seen, result = read(body, 9)
    assert seen == [] and result is not None
    assert result.fault and not result.ok and "No such method" in result.message


def test_objects_are_dropped_once_read() -> None:
    stream = PoolStream("IMAGE_POOL", "IMAGE")
    kept = []
    for chunk in chunks(answer(True, POOL, 0), 64):
        for element in stream.feed(chunk):
            parent = element.getparent()
            assert parent is not None
            kept.append(len(parent))
    list(stream.finish())
    # The object being read, the emptied one before it, at most the next one (partial).
    assert max(kept) <= 3


@pytest.mark.parametrize("body", [
    answer(True, "<!DOCTYPE x [<!ENTITY e 'boom'>]><IMAGE_POOL><IMAGE><ID>&e;</ID></IMAGE>"
                 "</IMAGE_POOL>", 0),
    b"<?xml version='1.0'?><!DOCTYPE m [<!ENTITY e 'x'>]><methodResponse/>",
    answer(True, "<IMAGE_POOL><IMAGE><ID>1</ID>", 0),                      # truncated document
    answer(True, POOL, 0)[:-40],                                           # truncated answer
    answer(True, "<VM_POOL><IMAGE><ID>1</ID></IMAGE></VM_POOL>", 0),       # another pool
    answer(True, "<IMAGE_POOL><X><IMAGE><ID>1</ID></IMAGE></X></IMAGE_POOL>", 0),  # nested
    answer(True, "", 0),                                                   # no document
    b"<html><body>502 Bad Gateway</body></html>",                          # not XML-RPC
])
def test_unreadable_or_hostile_answers_are_refused(body: bytes) -> None:
    with pytest.raises(PoolStreamError):
        read(body, 16)


def test_size_limit() -> None:
    stream = PoolStream("IMAGE_POOL", "IMAGE", max_bytes=1000)
    with pytest.raises(PoolStreamError, match="limit"):
        for chunk in chunks(answer(True, POOL, 0), 100):
            list(stream.feed(chunk))


DATASTORES = ("<DATASTORE_POOL>" + "".join(
    f"<DATASTORE><ID>{d}</ID><NAME>ds{d}</NAME><CLUSTERS><ID>0</ID><ID>{d + 100}</ID>"
    f"</CLUSTERS><IMAGES>{''.join(f'<ID>{i}</ID>' for i in range(500))}</IMAGES>"
    f"<TEMPLATE><DS_MAD>fs</DS_MAD></TEMPLATE></DATASTORE>" for d in range(3))
    + "</DATASTORE_POOL>")


def _datastore(element: object) -> tuple[str | None, ...]:
    from lxml import etree
    assert isinstance(element, etree._Element)
    return (element.findtext("ID"), element.findtext("NAME"),
            ",".join(i.text or "" for i in element.findall("CLUSTERS/ID")),
            str(len(element.findall("IMAGES/ID"))), element.findtext("TEMPLATE/DS_MAD"))


@pytest.mark.parametrize("size", [5, 4096, 10**9])
def test_dropped_id_lists_are_empty_and_the_rest_is_intact(size: int) -> None:
    stream = PoolStream("DATASTORE_POOL", "DATASTORE", drop_ids=frozenset({"IMAGES"}))
    seen = []
    for chunk in chunks(answer(True, DATASTORES, 0), size):
        seen += [_datastore(element) for element in stream.feed(chunk)]
    seen += [_datastore(element) for element in stream.finish()]
    assert seen == [(str(d), f"ds{d}", f"0,{d + 100}", "0", "fs") for d in range(3)]
    assert stream.answer == PoolAnswer(True, code=0)


def test_without_drop_ids_the_lists_are_read() -> None:
    stream = PoolStream("DATASTORE_POOL", "DATASTORE")
    seen = [_datastore(e) for e in stream.feed(answer(True, DATASTORES, 0))]
    seen += [_datastore(e) for e in stream.finish()]
    assert [s[3] for s in seen] == ["500", "500", "500"]


@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_declaration_cut_into_small_pieces_is_refused(size: int) -> None:
    """The check sees the end of the previous pieces too, however short each piece is."""
    body = answer(True, "<!DOCTYPE x [<!ENTITY e 'boom'>]><IMAGE_POOL></IMAGE_POOL>", 0)
    with pytest.raises(PoolStreamError, match="DOCTYPE"):
        read(body, size)
