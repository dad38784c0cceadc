"""``one.template.*`` calls.

Sources (OpenNebula/one, release-6.8.3):

* ``TemplateAllocate`` (``src/rm/RequestManagerAllocate.cc``) and ``VMTemplatePool::allocate``
  (``src/vm_template/VMTemplatePool.cc``): name checks, ``NAME is already taken by
  TEMPLATE <id>.``, ``VMTemplate::insert`` removes NAME from the template; the API event's
  ``EXTRA`` is the new VMTEMPLATE.
* ``TemplateInfo::request_execute`` (``src/rm/RequestManagerInfo.cc``): the optional
  ``extended`` flag adds image information to each DISK
  (``VirtualMachineDisks::extended_info`` / ``Image::disk_attribute``), in the shape of the
  recorded ``template.info.extended``.
* ``RequestManagerDelete`` (``src/rm/RequestManagerDelete.cc``) and ``VMTemplateClone``
  (``src/rm/RequestManagerClone.cc``, with the ``recursive`` image clone).
"""

from __future__ import annotations

from hookd.testing.image_manager import ImageManager
from hookd.testing.objects import ImageState, ImageType, VMTemplate
from hookd.testing.request import (
    ACTION,
    ALLOCATE,
    INTERNAL,
    NO_EXISTS,
    Call,
    RequestFailed,
)
from hookd.testing.rm_common import OP_MANAGE, OP_USE, check_lock, fetch
from hookd.testing.rm_image import clone_image, name_error
from hookd.testing.template_lang import (
    SingleAttribute,
    Template,
    TemplateParseError,
    VectorAttribute,
    parse_template,
)
from hookd.testing.world import World

# VMTemplateClone: attributes dropped from a DISK whose image was cloned
REMOVE_DISK_ATTRS = ("IMAGE", "IMAGE_UNAME", "IMAGE_UID", "IMAGE_ID")


def allocate(call: Call, world: World) -> None:
    """``one.template.allocate(session, template)``."""
    text = call.params.get_str(1)
    try:
        tmpl = parse_template(text, replace_mode=False, trim=world.flavour.major >= 7)
    except TemplateParseError as exc:
        raise RequestFailed(INTERNAL, str(exc)) from exc
    template = insert(call, world, tmpl)
    call.extra_xml = template.xml(world.flavour)
    call.resp_id = template.oid
    call.succeed(template.oid)


def insert(call: Call, world: World, tmpl: Template) -> VMTemplate:
    """``VMTemplatePool::allocate`` + ``VMTemplate::insert``."""
    name = tmpl.get("NAME") or ""
    error = name_error(name)
    if error:
        raise RequestFailed(ALLOCATE, error)
    taken = world.templates.find_name(name, call.uid)
    if taken is not None:
        raise RequestFailed(ALLOCATE, f"NAME is already taken by TEMPLATE {taken}.")
    tmpl.erase("NAME")
    if not tmpl.xml_is_well_formed():
        raise RequestFailed(ALLOCATE, "Error transforming the Template to XML.")
    tmpl.normalize_for_storage()
    template = VMTemplate(
        oid=world.templates.next_oid(), name=name, template=tmpl, uid=call.uid, gid=call.gid,
        uname=call.uname, gname=call.gname, regtime=world.now(),
    )
    world.templates.add(template)
    return template


def info(call: Call, world: World) -> None:
    """``one.template.info(session, id, [extended], [decrypt])``."""
    oid = call.params.get_int(1)
    extended = call.params.get_bool(2) if len(call.params) > 2 else False
    template = world.templates.get(oid)
    if template is None:
        raise RequestFailed(NO_EXISTS, resp_id=oid)
    if call.is_admin and len(call.params) > 3:
        call.params.get_bool(3)
    if not extended:
        call.succeed(template.xml(world.flavour))
        return
    call.succeed(template.render_with(extended_template(world, template.template)))


def extended_template(world: World, source: Template) -> Template:
    """A copy of ``source`` whose DISKs carry the image and datastore attributes."""
    tmpl = source.copy()
    disk_id = 0
    for attr in tmpl:
        if not isinstance(attr, VectorAttribute) or attr.name != "DISK":
            continue
        disk = attr.value
        image = None
        image_id = disk.get("IMAGE_ID")
        if image_id is not None and image_id.strip().lstrip("-").isdigit():
            image = world.images.get(int(image_id))
        elif disk.get("IMAGE"):
            found = world.images.find_name(disk["IMAGE"], 0)
            image = world.images.get(found) if found is not None else None
        if image is not None:
            ds = world.datastores.get(image.ds_id)
            is_cdrom = image.type == ImageType.CDROM
            disk_type = "CDROM" if is_cdrom else "FILE"
            fields = {
                "CLONE": "NO" if image.persistent else "YES",
                "DATASTORE": image.ds_name,
                "DATASTORE_ID": str(image.ds_id),
                "DEV_PREFIX": image.template.get("DEV_PREFIX") or "sd",
                "DISK_SNAPSHOT_TOTAL_SIZE": "0",
                "DISK_TYPE": disk_type,
                "DRIVER": image.format,
                "FORMAT": image.format,
                "IMAGE": image.name,
                "IMAGE_ID": str(image.oid),
                "IMAGE_STATE": str(image.state),
                "ORIGINAL_SIZE": str(image.size_mb),
                "READONLY": "YES" if is_cdrom else "NO",
                "SAVE": "YES" if image.persistent else "NO",
                "SIZE": str(image.size_mb),
                "SOURCE": image.source,
                "TYPE": disk_type,
            }
            if ds is not None:
                fields["ALLOW_ORPHANS"] = ds.template.get("ALLOW_ORPHANS") or "NO"
                fields["CLONE_TARGET"] = ds.template.get("CLONE_TARGET") or "SYSTEM"
                fields["CLUSTER_ID"] = ",".join(str(c) for c in sorted(ds.clusters))
                fields["LN_TARGET"] = ds.template.get("LN_TARGET") or "NONE"
                fields["TM_MAD"] = ds.tm_mad
            for key, value in fields.items():
                disk.setdefault(key, value)
        disk["DISK_ID"] = str(disk_id)
        disk_id += 1
    return tmpl


def delete(call: Call, world: World, manager: ImageManager) -> None:
    """``one.template.delete(session, id, [recursive])``."""
    oid = call.params.get_int(1)
    recursive = call.params.get_bool(2) if len(call.params) > 2 else False
    existing = world.templates.get(oid)
    if existing is not None:
        call.extra_xml = existing.xml(world.flavour)
    template = fetch(world.templates, oid)
    check_lock("template", template, OP_MANAGE)
    if recursive:
        for disk in template.template.vectors("DISK"):
            raw = disk.value.get("IMAGE_ID", "").strip()
            image = world.images.get(int(raw)) if raw.lstrip("-").isdigit() else None
            if image is not None:
                error = manager.delete(image)
                if error is not None:
                    raise RequestFailed(
                        ACTION, f"Cannot delete virtual machine template. {error}"
                    )
    world.templates.remove(oid)
    call.succeed(oid)


def clone(call: Call, world: World, manager: ImageManager) -> None:
    """``one.template.clone(session, id, name, [recursive])``."""
    source_id = call.params.get_int(1)
    name = call.params.get_str(2)
    recursive = call.params.get_bool(3) if len(call.params) > 3 else False
    source = world.templates.get(source_id)
    if source is None:
        raise RequestFailed(NO_EXISTS, resp_id=source_id)
    tmpl = source.template.copy()
    tmpl.erase("NAME")
    tmpl.set(SingleAttribute("NAME", name, normalized=True))
    check_lock("template", source, OP_USE)
    new = insert(call, world, tmpl)
    if recursive:
        _clone_disks(call, world, manager, new, name)
    call.succeed(new.oid)


def _clone_disks(
    call: Call, world: World, manager: ImageManager, new: VMTemplate, name: str
) -> None:
    new_ids: list[int] = []
    for ndisk, disk in enumerate(new.template.vectors("DISK")):
        raw = disk.value.get("IMAGE_ID", "").strip()
        if not raw.lstrip("-").isdigit():
            continue
        try:
            new_ids.append(
                clone_image(call, world, manager, int(raw), f"{name}-disk-{ndisk}", -1)
            )
        except RequestFailed as exc:
            world.templates.remove(new.oid)
            for image_id in new_ids:
                image = world.images.get(image_id)
                if image is not None and image.state != ImageState.DELETE:
                    manager.delete(image)
            raise RequestFailed(ACTION, f"Failed to clone images: {exc.message}") from exc
        for key in REMOVE_DISK_ATTRS:
            disk.value.pop(key, None)
        disk.value["IMAGE_ID"] = str(new_ids[-1])
    new.invalidate()
