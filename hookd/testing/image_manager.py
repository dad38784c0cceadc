"""Image life-cycle: what oned's ImageManager does around the datastore drivers.

Reproduces ``src/image/ImageManagerActions.cc`` and ``src/image/ImageManagerProtocol.cc``
(release-6.8.3):

* ``register_image``: PATH set -> ``cp``; no PATH but SOURCE -> READY at once
  (``set_state_unlock`` + ``ipool->update`` inside the allocate call); no PATH, no SOURCE,
  OS/DATABLOCK -> ``mkfs``. Driver answers arrive asynchronously; here after
  ``ready_delay`` seconds.
* ``_cp`` / ``_mkfs`` / ``_clone``: set SOURCE (and FORMAT), ``set_state_unlock`` (LOCKED
  -> READY) and save; on failure ``set_template_error_message`` (``ERROR`` =
  ``"<ctime> : Error copying image in the datastore: <driver output>"``) and state ERROR.
* ``set_clone_state``: the source of a clone goes to USED (CLONE when persistent) with
  ``CLONING_OPS``/``CLONES`` updated; ``release_cloning_resource`` brings it back to READY.
* ``delete_image``: without SOURCE the image is dropped at once; otherwise it goes to
  DELETE (a STATE event) and is dropped when the ``rm`` driver returns.
* ``enable_image``: DISABLED <-> READY, ERROR -> READY/DISABLED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hookd.testing import ds_driver
from hookd.testing.objects import Datastore, Image, ImageState, ImageType, image_state_to_str
from hookd.testing.template_lang import SingleAttribute
from hookd.testing.world import World

Schedule = Callable[[float, Callable[[], None]], None]


@dataclass
class _ForcedError:
    image_id: int | None
    message: str


def log_time() -> str:
    """``one_util::log_time``: ``ctime`` format without the newline."""
    return time.ctime()


def set_template_error_message(image: Image, message: str, name: str = "ERROR") -> None:
    """``PoolObjectSQL::set_template_error_message``."""
    image.template.erase(name)
    image.template.set(SingleAttribute(name, f"{log_time()} : {message}", normalized=True))
    image.invalidate()


def set_state_unlock(world: World, image: Image) -> None:
    """``Image::set_state_unlock``."""
    if image.state == ImageState.LOCKED:
        world.set_image_state(image, ImageState.READY)
    elif image.state == ImageState.LOCKED_USED:
        world.set_image_state(image, ImageState.USED)
    elif image.state == ImageState.LOCKED_USED_PERS:
        world.set_image_state(image, ImageState.USED_PERS)
    elif image.state == ImageState.ERROR:
        if image.running_vms == 0:
            world.set_image_state(image, ImageState.READY)
        else:
            world.set_image_state(
                image, ImageState.USED_PERS if image.persistent else ImageState.USED
            )


class ImageManager:
    """Asynchronous image operations; every callback runs under the world lock."""

    def __init__(
        self, world: World, call_later: Schedule, *, ready_delay: float,
        datastore_dir: str | None,
    ) -> None:
        self.world = world
        self.call_later = call_later
        self.ready_delay = ready_delay
        self.datastore_dir = datastore_dir
        self._forced_errors: list[_ForcedError] = []

    # -- controls ------------------------------------------------------------------------
    def fail_next_ready(self, image_id: int | None, message: str) -> None:
        """Make the next driver completion (of ``image_id``, or of any image) fail."""
        with self.world.lock:
            self._forced_errors.append(_ForcedError(image_id, message))

    def _take_forced_error(self, image_id: int) -> str | None:
        for index, forced in enumerate(self._forced_errors):
            if forced.image_id in (None, image_id):
                del self._forced_errors[index]
                return forced.message
        return None

    # -- register ------------------------------------------------------------------------
    def register(self, image: Image) -> None:
        """``ImageManager::register_image`` (called with the world lock held)."""
        if not image.path:
            if image.source:
                set_state_unlock(self.world, image)
                self.world.save_image(image)
            elif image.type in (ImageType.DATABLOCK, ImageType.OS):
                self._later(self._mkfs_done, image.oid)
            return
        self._later(self._cp_done, image.oid)

    def _later(self, fn: Callable[..., None], image_id: int, *args: int) -> None:
        def run() -> None:
            with self.world.lock:
                fn(image_id, *args)

        self.call_later(self.ready_delay, run)

    def _datastore(self, image: Image) -> Datastore | None:
        return self.world.datastores.get(image.ds_id)

    def _fail(self, image: Image, message: str) -> None:
        set_template_error_message(image, message)
        self.world.set_image_state(image, ImageState.ERROR)
        self.world.save_image(image)

    def _cp_done(self, image_id: int) -> None:
        image = self.world.images.get(image_id)
        if image is None:
            return
        forced = self._take_forced_error(image_id)
        ds = self._datastore(image)
        if forced is not None or ds is None:
            self._fail(image, f"Error copying image in the datastore: {forced or ''}".rstrip(": "))
            return
        result = ds_driver.copy(ds, image, self.datastore_dir)
        if not result.ok:
            info = result.output
            message = "Error copying image in the datastore"
            if info and not info.startswith("-"):
                message += ": " + info
            self._fail(image, message)
            return
        fields = result.output.split()
        if len(fields) < 2 or not fields[1]:
            image.source = fields[0] if fields else ""
            self._fail(image, "CP operation succeeded but image FORMAT was not returned.")
            return
        image.source, image.format = fields[0], fields[1]
        set_state_unlock(self.world, image)
        self.world.save_image(image)

    def _mkfs_done(self, image_id: int) -> None:
        image = self.world.images.get(image_id)
        if image is None or image.state == ImageState.DELETE:
            return
        forced = self._take_forced_error(image_id)
        ds = self._datastore(image)
        if forced is not None or ds is None:
            self._fail(image, f"Error creating datablock: {forced or ''}".rstrip(": "))
            return
        image.source = ds_driver.mkfs(ds, image).output
        set_state_unlock(self.world, image)
        self.world.save_image(image)

    # -- clone ---------------------------------------------------------------------------
    def set_clone_state(self, source: Image, new_id: int) -> None:
        """``ImageManager::set_clone_state`` for an image clone."""
        if source.state == ImageState.READY:
            source.clones.add(new_id)
            source.cloning_ops = len(source.clones) + len(source.app_clones)
            self.world.set_image_state(
                source, ImageState.CLONE if source.persistent else ImageState.USED
            )
            self.world.save_image(source)
        elif source.state in (ImageState.USED, ImageState.CLONE):
            source.clones.add(new_id)
            source.cloning_ops = len(source.clones) + len(source.app_clones)
            self.world.save_image(source)

    def start_clone(self, new_image: Image, source_id: int) -> None:
        self._later(self._clone_done, new_image.oid, source_id)

    def _clone_done(self, image_id: int, source_id: int) -> None:
        image = self.world.images.get(image_id)
        if image is not None:
            forced = self._take_forced_error(image_id)
            ds = self._datastore(image)
            source = self.world.images.get(source_id)
            if forced is not None or ds is None or source is None:
                message = f"Error cloning from Image {source_id}"
                if forced:
                    message += ": " + forced
                set_template_error_message(image, message)
                self.world.set_image_state(image, ImageState.ERROR)
            else:
                fields = ds_driver.clone(ds, source, image).output.split()
                image.source = fields[0]
                if len(fields) > 1 and fields[1]:
                    image.format = fields[1]
                set_state_unlock(self.world, image)
            image.cloning_id = -1
            self.world.save_image(image)
        self.release_cloning(source_id, image_id)

    def release_cloning(self, source_id: int, clone_id: int) -> None:
        """``ImageManager::release_cloning_resource`` for an image clone."""
        source = self.world.images.get(source_id)
        if source is None or source.type not in (
            ImageType.OS, ImageType.DATABLOCK, ImageType.CDROM, ImageType.FILESYSTEM
        ):
            return
        if source.state in (ImageState.USED, ImageState.CLONE):
            source.clones.discard(clone_id)
            source.cloning_ops = len(source.clones) + len(source.app_clones)
            if source.cloning_ops == 0 and source.running_vms == 0:
                self.world.set_image_state(source, ImageState.READY)
            source.invalidate()
            self.world.save_image(source)

    # -- delete --------------------------------------------------------------------------
    def delete(self, image: Image) -> str | None:
        """``ImageManager::delete_image``; returns an error message or None."""
        state = image.state
        if state == ImageState.READY and image.running_vms != 0:
            return f"There are {image.running_vms} VMs using it."
        if state == ImageState.CLONE:
            return f"There are {image.cloning_ops} active clone operations."
        if state in (ImageState.USED, ImageState.USED_PERS, ImageState.LOCKED_USED,
                     ImageState.LOCKED_USED_PERS):
            return f"There are {image.running_vms} VMs using it."
        cloning_id = image.cloning_id if state == ImageState.LOCKED else -1
        if not image.source:
            self.drop(image)
        else:
            self.world.set_image_state(image, ImageState.DELETE)
            image.cloning_id = -1
            self.world.save_image(image)
            self._later(self._rm_done, image.oid)
        if cloning_id != -1:
            self.release_cloning(cloning_id, image.oid)
        return None

    def _rm_done(self, image_id: int) -> None:
        image = self.world.images.get(image_id)
        if image is not None:
            self.drop(image)

    def drop(self, image: Image) -> None:
        """``ImagePool::drop``: the image leaves the pool and its datastore."""
        self.world.images.remove(image.oid)
        ds = self.world.datastores.get(image.ds_id)
        if ds is not None:
            ds.images.discard(image.oid)
            ds.invalidate()
        self.world.changed.notify_all()

    # -- enable --------------------------------------------------------------------------
    def enable(self, image: Image, enable: bool) -> str | None:
        """``ImageManager::enable_image``; returns an error message or None."""
        if image.type == ImageType.BACKUP:
            return "Backup images cannot be enabled or disabled."
        state = image.state
        if enable:
            if state == ImageState.DISABLED:
                self.world.set_image_state(image, ImageState.READY)
                self.world.save_image(image)
            elif state == ImageState.ERROR:
                set_state_unlock(self.world, image)
                self.world.save_image(image)
            elif state != ImageState.READY:
                return f"Image cannot be in state {image_state_to_str(state)}."
        elif state in (ImageState.READY, ImageState.ERROR):
            self.world.set_image_state(image, ImageState.DISABLED)
            self.world.save_image(image)
        elif state != ImageState.DISABLED:
            return f"Image cannot be in state {image_state_to_str(state)}."
        return None
