"""``one.image.*`` calls that create, change or remove images.

Sources (OpenNebula/one, release-6.8.3 unless noted):

* ``ImageAllocate::request_execute`` (``src/rm/RequestManagerAllocate.cc``): parse,
  datastore checks, ``FROM_APP`` (``MarketPlaceApp::to_template`` copies the app's NAME,
  SOURCE as PATH, FORMAT and MD5; SIZE comes from the app; ``DRIVER`` is dropped), else
  the driver ``stat``; capacity check; ``ImagePool::allocate`` (``src/image/ImagePool.cc``:
  name checks, KERNEL/RAMDISK/CONTEXT only in FILE_DS, unique name per owner) and
  ``Image::insert`` (``src/image/Image.cc``: NAME/TYPE/PERSISTENT/SIZE/FS/DRIVER/PATH/
  SOURCE/FORMAT/TM_MAD leave the template, DEV_PREFIX defaults, state LOCKED with
  PREV_STATE INIT and *no* event), then ``register_image``. The API event carries the new
  image in ``EXTRA``.
* ``ImageDelete::request_execute`` (``src/rm/RequestManagerDelete.cc``),
  ``ImageEnable`` and ``ImageClone`` (``src/rm/RequestManagerImage.cc``).
"""

from __future__ import annotations

import re

from hookd.testing import ds_driver
from hookd.testing.image_manager import ImageManager
from hookd.testing.objects import (
    Datastore,
    DatastoreType,
    Image,
    ImageState,
    ImageType,
    image_state_to_str,
)
from hookd.testing.request import (
    ACTION,
    ALLOCATE,
    INTERNAL,
    NO_EXISTS,
    Call,
    RequestFailed,
)
from hookd.testing.rm_common import OP_MANAGE, OP_USE, basic_authorization, check_lock, fetch
from hookd.testing.template_lang import (
    SingleAttribute,
    Template,
    TemplateParseError,
    parse_template,
)
from hookd.testing.world import World

INVALID_NAME_CHARS = "&|:\\\";/'#{}$<>"  # PoolObjectSQL::INVALID_NAME_CHARS


def name_error(name: str) -> str | None:
    """``PoolObjectSQL::name_is_valid``: the error message, or None when valid."""
    if not name:
        return "Invalid NAME, it cannot be empty"
    for char in name:
        if char in INVALID_NAME_CHARS:
            return f"Invalid NAME, char '{char}' is not allowed"
    if len(name.encode("utf-8")) > 128:
        return "Invalid NAME, max length is 128 chars"
    return None


def template_int(template: Template, name: str) -> int | None:
    """``Template::get(name, int&)``: the value if it is a whole integer."""
    value = template.get(name)
    if value is None:
        return None
    match = re.fullmatch(r"\s*([+-]?\d+)", value)
    return int(match.group(1)) if match else None


def _type_of(text: str | None) -> int:
    """``Image::str_to_type`` (unknown names map to OS)."""
    name = (text or "OS").upper()
    return int(ImageType[name]) if name in ImageType.__members__ else int(ImageType.OS)


def allocate(call: Call, world: World, manager: ImageManager) -> None:
    """``one.image.allocate(session, template, ds_id, [skip_capacity_check])``."""
    text = call.params.get_str(1)
    ds_id = call.params.get_int(2)
    check_capacity = True
    if len(call.params) > 3 and call.is_admin:
        check_capacity = not call.params.get_bool(3)
    try:
        tmpl = parse_template(text, replace_mode=True, trim=world.flavour.major >= 7)
    except TemplateParseError as exc:
        raise RequestFailed(INTERNAL, str(exc)) from exc

    ds = world.datastores.get(ds_id)
    if ds is None:
        raise RequestFailed(NO_EXISTS, resp_id=ds_id, resp_obj="datastore")
    if ds.type in (DatastoreType.SYSTEM_DS, DatastoreType.BACKUP_DS):
        raise RequestFailed(
            ALLOCATE, "New images can only be allocated in a files or image datastore."
        )

    app_id = template_int(tmpl, "FROM_APP")
    if app_id is not None:
        app = world.apps.get(app_id)
        if app is None:
            raise RequestFailed(INTERNAL, "Cannot determine image SIZE.")
        tmpl.replace("FROM_APP_NAME", app.name)
        tmpl.replace("PATH", app.source)
        tmpl.replace("FORMAT", app.format)
        tmpl.replace("FROM_APP_MD5", app.md5)
        size_str = str(app.size_mb)
        if world.markets.get(app.market_id) is None:
            raise RequestFailed(INTERNAL, "Could not get the appliance's market.")
        if ds.template.get("DRIVER"):
            tmpl.erase("DRIVER")
    else:
        size_str = _stat(tmpl, ds)
    match = re.match(r"\s*([+-]?\d+)", size_str)
    if match is None:
        raise RequestFailed(INTERNAL, f"Cannot parse image SIZE: {size_str}")
    size_mb = int(match.group(1))
    if check_capacity and size_mb > ds.free_mb:
        raise RequestFailed(ACTION, "Not enough space in datastore")
    tmpl.erase("SIZE")
    tmpl.replace("SIZE", size_str)

    image = _insert(call, world, tmpl, ds, cloning_id=-1)
    manager.register(image)
    ds.images.add(image.oid)
    ds.invalidate()
    call.extra_xml = image.xml(world.flavour)
    call.resp_id = image.oid
    call.succeed(image.oid)


def _stat(tmpl: Template, ds: Datastore) -> str:
    """``ImageManager::stat_image`` plus the datastore driver's ``stat``."""
    type_name = (tmpl.get("TYPE") or "OS").upper()
    itype = _type_of(type_name)
    if itype == ImageType.BACKUP:
        size = tmpl.get("SIZE")
        if size is None:
            raise RequestFailed(INTERNAL, "Cannot parse image SIZE: ")
        return size
    if tmpl.get("SOURCE"):
        if template_int(tmpl, "SIZE") is None:
            raise RequestFailed(INTERNAL, "Cannot parse image SIZE: Wrong number or missing SIZE "
                                "attribute.")
        return tmpl.get("SIZE") or ""
    path = tmpl.get("PATH") or ""
    if not path:
        if itype in (ImageType.OS, ImageType.DATABLOCK):
            if template_int(tmpl, "SIZE") is None:
                raise RequestFailed(
                    INTERNAL, "Cannot parse image SIZE: Wrong number or missing SIZE attribute."
                )
            return tmpl.get("SIZE") or ""
        raise RequestFailed(
            INTERNAL, f"Cannot parse image SIZE: Either PATH or SOURCE are required for {type_name}"
        )
    result = ds_driver.stat(ds, path)
    if not result.ok:
        raise RequestFailed(INTERNAL, f"Cannot parse image SIZE: {result.output}")
    return result.output


def _insert(call: Call, world: World, tmpl: Template, ds: Datastore, *, cloning_id: int) -> Image:
    """``ImagePool::allocate`` + ``Image::insert``; returns the new LOCKED image."""
    name = tmpl.get("NAME") or ""
    error = name_error(name)
    if error:
        raise RequestFailed(ALLOCATE, error)
    itype = _type_of(tmpl.get("TYPE"))
    if itype in (ImageType.OS, ImageType.DATABLOCK, ImageType.CDROM):
        if ds.type != DatastoreType.IMAGE_DS:
            raise RequestFailed(ALLOCATE, "Only IMAGES of type KERNEL, RAMDISK and CONTEXT can "
                                "be registered in a FILE_DS datastore")
    elif itype in (ImageType.KERNEL, ImageType.RAMDISK, ImageType.CONTEXT):
        if ds.type != DatastoreType.FILE_DS:
            raise RequestFailed(ALLOCATE, "IMAGES of type KERNEL, RAMDISK and CONTEXT cannot be "
                                "registered in an IMAGE_DS datastore")
    elif itype == ImageType.BACKUP and ds.type != DatastoreType.BACKUP_DS:
        raise RequestFailed(ALLOCATE, "IMAGES of type BACKUP can only be registered in an "
                            "BACKUP_DS datastore")
    taken = world.images.find_name(name, call.uid)
    if taken is not None:
        raise RequestFailed(ALLOCATE, f"NAME is already taken by IMAGE {taken}.")
    if cloning_id != -1:
        source = world.images.get(cloning_id)
        if source is None:
            raise RequestFailed(ALLOCATE, "Cannot clone image, it does not exist")
        if source.type == ImageType.BACKUP:
            raise RequestFailed(ALLOCATE, "Cannoe clone backup images")
        if source.state not in (ImageState.CLONE, ImageState.READY, ImageState.USED):
            raise RequestFailed(
                ALLOCATE, f"Cannot clone image in state: {image_state_to_str(source.state)}"
            )

    now = world.now()
    image = Image(
        oid=world.images.next_oid(), name="", template=tmpl, uid=call.uid, gid=call.gid,
        uname=call.uname, gname=call.gname, regtime=now, modtime=now, ds_id=ds.oid,
        ds_name=ds.name, disk_type=ds.disk_type, cloning_id=cloning_id,
    )
    tmpl.replace("TM_MAD", ds.tm_mad)
    error = image_insert(world, image, ds)
    if error:
        raise RequestFailed(ALLOCATE, error)
    if not tmpl.xml_is_well_formed():
        raise RequestFailed(ALLOCATE, "Error transforming the Image to XML.")
    tmpl.normalize_for_storage()
    world.images.add(image)
    return image


def image_insert(world: World, image: Image, ds: Datastore) -> str | None:
    """``Image::insert``: move fixed attributes out of the template; return an error."""
    tmpl = image.template
    image.name = tmpl.get("NAME") or ""
    tmpl.erase("NAME")
    type_attr = (tmpl.get("TYPE") or "OS")
    tmpl.erase("TYPE")
    if type_attr.upper() not in ImageType.__members__ or (
        type_attr.upper() == "FILESYSTEM" and world.flavour.major < 7
    ):
        return "Unknown type "  # sic: "Unknown type " + <enum> in src/image/Image.cc
    image.type = ImageType[type_attr.upper()]
    persistent_attr = tmpl.get("PERSISTENT") or ""
    tmpl.erase("PERSISTENT")
    itype = image.type
    prefix_types = {ImageType.OS, ImageType.DATABLOCK}
    if world.flavour.cdrom_gets_dev_prefix:
        prefix_types.add(ImageType.CDROM)
    if itype in prefix_types:
        image.persistent = int(persistent_attr.upper() == "YES")
        if not tmpl.get("DEV_PREFIX"):
            prefix = "hd" if itype == ImageType.CDROM else "sd"
            tmpl.set(SingleAttribute("DEV_PREFIX", prefix, normalized=True))
    elif itype == ImageType.BACKUP:
        image.persistent = 1
        tmpl.erase("DEV_PREFIX")
    elif itype == ImageType.FILESYSTEM:
        image.persistent = int(persistent_attr.upper() == "YES")
        tmpl.erase("DEV_PREFIX")
    else:
        image.persistent = 0
        tmpl.erase("DEV_PREFIX")
    size = re.match(r"\s*([+-]?\d+)", tmpl.get("SIZE") or "")
    image.size_mb = int(size.group(1)) if size else 0
    tmpl.erase("SIZE")
    image.fs = tmpl.get("FS") or ""
    tmpl.erase("FS")
    tmpl.erase("DRIVER")
    image.path = tmpl.get("PATH") or ""
    image.source = tmpl.get("SOURCE") or ""
    image.format = tmpl.get("FORMAT") or ""
    for name in ("PATH", "SOURCE", "FORMAT", "TM_MAD"):
        tmpl.erase(name)
    if image.cloning_id == -1:
        if image.source:
            if image.path:
                return "PATH and SOURCE cannot be both set."
            if not image.format:
                return "SOURCE needs FORMAT to be set."
        elif itype == ImageType.BACKUP:
            return "SOURCE cannot be empty for BACKUP images"
        elif image.path:
            image.format = ""
        elif itype in (ImageType.DATABLOCK, ImageType.OS):
            driver = ds.template.get("DRIVER")
            if driver:
                tmpl.replace("DRIVER", driver)
                image.format = driver
            elif not image.format:
                image.format = "raw"
        elif itype == ImageType.FILESYSTEM:
            image.format = "dir"
        else:
            return "No PATH nor SOURCE in template."
    image.state = ImageState.LOCKED
    image.prev_state = ImageState.INIT
    return None


def delete(call: Call, world: World, manager: ImageManager) -> None:
    """``one.image.delete(session, id, [force])``."""
    oid = call.params.get_int(1)
    force = call.params.get_bool(2) if len(call.params) > 2 else False
    image = fetch(world.images, oid)
    op = OP_MANAGE
    if image.lock is not None:
        op = OP_ADMIN_LOCKED
        if not force:
            raise RequestFailed(
                INTERNAL,
                "Image locked, use --force flag to remove the image. Force delete may leave "
                "some files on Datastore",
                resp_id=oid,
            )
    if force:
        image.template.replace("FORCE_DELETE", "YES")
        image.invalidate()
        world.save_image(image)
    call.extra_xml = image.xml(world.flavour)
    check_lock("image", image, op)
    error = manager.delete(image)
    if error is not None:
        raise RequestFailed(ACTION, f"Cannot delete image. {error}")
    call.succeed(oid)


OP_ADMIN_LOCKED = 4  # ImageDelete switches to ADMIN for a DB-locked image


def enable(call: Call, world: World, manager: ImageManager) -> None:
    """``one.image.enable(session, id, enable)``: DISABLED <-> READY."""
    oid = call.params.get_int(1)
    flag = call.params.get_bool(2)
    image = basic_authorization(call, world.images, oid, OP_MANAGE)
    if image is None:
        raise RequestFailed(INTERNAL, "Could not enable image: " if flag else
                            "Could not disable image: ")
    error = manager.enable(image, flag)
    if error is not None:
        verb = "enable" if flag else "disable"
        raise RequestFailed(INTERNAL, f"Could not {verb} image: {error}")
    call.succeed(oid)


def clone(call: Call, world: World, manager: ImageManager) -> None:
    """``one.image.clone(session, id, name, [ds_id])``."""
    source_id = call.params.get_int(1)
    name = call.params.get_str(2)
    ds_id = call.params.get_int(3) if len(call.params) > 3 else -1
    new_id = clone_image(call, world, manager, source_id, name, ds_id)
    call.succeed(new_id)


def clone_image(
    call: Call, world: World, manager: ImageManager, source_id: int, name: str, ds_id: int
) -> int:
    """``ImageClone::request_execute(clone_id, name, ds_id, ...)``; returns the new ID."""
    source = world.images.get(source_id)
    if source is None:
        raise RequestFailed(NO_EXISTS, resp_id=source_id)
    if source.type in (ImageType.KERNEL, ImageType.RAMDISK, ImageType.CONTEXT,
                       ImageType.BACKUP):
        raise RequestFailed(ACTION, "KERNEL, RAMDISK, BACKUP and CONTEXT cannot be cloned.")
    tmpl = source.template.copy()
    tmpl.replace_mode = True
    tmpl.replace("NAME", name)
    tmpl.replace("TYPE", ImageType(source.type).name)
    tmpl.replace("PATH", source.source)
    tmpl.replace("FORMAT", source.format)
    tmpl.replace("SIZE", str(source.size_mb))
    tmpl.erase("VCENTER_IMPORTED")
    tmpl.replace("PERSISTENT", "YES" if source.persistent else "NO")
    target_id = source.ds_id if ds_id == -1 else ds_id
    target = world.datastores.get(target_id)
    if target is None:
        raise RequestFailed(NO_EXISTS, resp_id=target_id, resp_obj="datastore")
    if target.type != DatastoreType.IMAGE_DS:
        raise RequestFailed(ACTION, "Clone only supported for IMAGE_DS Datastores")
    if target_id != source.ds_id:
        original = world.datastores.get(source.ds_id)
        if original is None:
            raise RequestFailed(NO_EXISTS, resp_id=source.ds_id, resp_obj="datastore")
        if original.type != DatastoreType.IMAGE_DS:
            raise RequestFailed(ACTION, "Clone only supported for IMAGE_DS Datastores")
        if original.ds_mad != target.ds_mad:
            raise RequestFailed(ACTION, "Clone only supported to same DS_MAD Datastores")
    if source.size_mb > target.free_mb:
        raise RequestFailed(ACTION, "Not enough space in datastore")
    check_lock("image", source, OP_USE)
    image = _insert(call, world, tmpl, target, cloning_id=source_id)
    manager.set_clone_state(source, image.oid)
    manager.start_clone(image, source_id)
    target.images.add(image.oid)
    target.invalidate()
    return image.oid
