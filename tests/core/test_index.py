from __future__ import annotations

from hookd.index import TemplateIndex
from tests.core import factories as f


def test_lookup_by_id_and_by_name() -> None:
    index = TemplateIndex()
    index.put(f.vmtemplate(1, disks=[{"IMAGE_ID": "10"}]))
    index.put(f.vmtemplate(2, uid=3, disks=[{"IMAGE": "nginx"}]))
    index.put(f.vmtemplate(3, disks=[{"IMAGE": "nginx", "IMAGE_UNAME": "alice"}]))
    index.put(f.vmtemplate(4, disks=[{"IMAGE": "nginx", "IMAGE_UID": "9"}]))
    assert index.templates_for(10, "nginx", 3, "alice") == [1, 2, 3]
    assert index.templates_for(11, "nginx", 9, "bob") == [4]


def test_update_and_remove_keep_the_index_exact() -> None:
    index = TemplateIndex()
    index.put(f.vmtemplate(1, disks=[{"IMAGE_ID": "10"}]))
    index.put(f.vmtemplate(2, disks=[{"IMAGE_ID": "10"}]))
    index.put(f.vmtemplate(1, disks=[{"IMAGE_ID": "11"}]))
    assert index.templates_for(10, "x", 0, "a") == [2]
    assert index.templates_for(11, "x", 0, "a") == [1]
    index.remove(2)
    assert index.templates_for(10, "x", 0, "a") == []
    assert len(index) == 1


def test_sweep_forgets_templates_it_did_not_see() -> None:
    index = TemplateIndex()
    index.put(f.vmtemplate(1))
    index.put(f.vmtemplate(2))
    index.begin_sweep()
    index.put(f.vmtemplate(2))
    assert index.end_sweep() == [1]
    assert len(index) == 1


def test_resolve_by_name_uses_known_images() -> None:
    index = TemplateIndex()
    refs = index.put(f.vmtemplate(1, uid=3, disks=[{"IMAGE": "nginx"}, {"IMAGE_ID": "12"}]))
    assert index.resolve(refs) == [12]
    index.remember_image(10, "nginx", 3, "alice")
    assert index.resolve(refs) == [10, 12]
    index.remember_image(10, "nginx2", 3, "alice")  # renamed
    assert index.resolve(refs) == [12]


def test_template_disks_read_the_refs_template_refs_reads() -> None:
    """A sweep indexes every template from its DISK vectors alone (template_disks): the
    references must be those of the full facts. A sub-attribute name is exact in oned
    (VirtualMachineDisk reads IMAGE_ID, IMAGE...): a lower-case ``image`` names nothing."""
    from lxml import etree

    from hookd import documents
    from hookd.index import disk_refs, template_refs

    xml = (b"<VMTEMPLATE><ID>7</ID><UID>3</UID><NAME>t</NAME><TEMPLATE>"
           b"<CPU>1</CPU><DISK><IMAGE_ID>12</IMAGE_ID></DISK><disk><IMAGE>web</IMAGE></disk>"
           b"<DISK><image>lower</image></DISK>"
           b"<DISK><IMAGE>db</IMAGE><IMAGE_UNAME>bob</IMAGE_UNAME></DISK><DISK>plain</DISK>"
           b"<DISK><IMAGE>x</IMAGE><IMAGE_UID>9</IMAGE_UID><!-- c --></DISK>"
           b"<HOOKD><IMAGE_ID>12</IMAGE_ID><VERSION>2</VERSION></HOOKD>"
           b"<NIC><NETWORK_ID>0</NETWORK_ID></NIC></TEMPLATE></VMTEMPLATE>")
    element = etree.fromstring(xml)
    head = documents.template_disks(element)
    full = documents.vm_template(element)
    assert (head.id, head.uid, head.recorded_image) == (7, 3, 12)
    assert head.disks == tuple(full.template.vectors("DISK"))
    assert disk_refs(head.disks, head.uid) == template_refs(full) == (
        ("i", 12), ("u", "web", 3), ("n", "db", "bob"), ("u", "x", 9))
