"""What the datastore drivers answer for stat, cp, mkfs and clone.

oned delegates these to ``one_datastore`` scripts (``src/datastore_mad/remotes/<ds_mad>/``
at release-6.8.3); the simulator answers in their place:

* ``dummy``: ``stat`` prints ``1024``, ``cp`` prints ``dummy_path dummy_format``,
  ``mkfs``/``clone`` print ``dummy_path``.
* ``fs`` (and any other driver): ``stat`` is ``fs_size`` in ``libfs.sh`` (a directory: its
  size; ``docker://``/``dockerfile://``: the ``size=`` URL argument; a local file: its size
  rounded up to MiB; anything else: ``File not found``); ``cp`` refuses local paths under
  ``RESTRICTED_DIRS`` that are not under ``SAFE_DIRS`` (``check_restricted`` /
  ``set_up_datastore``), writes to ``BASE_PATH/<md5 of "<epoch>:<image id>">``
  (``generate_image_path``) and reports the format (``qemu-img`` for local files, the
  ``format=`` argument of container URLs).

With ``datastore_dir`` set, ``cp`` of a local file into a non-dummy datastore really
copies it to ``<datastore_dir>/<ds id>/<hash>`` so the front-end can read it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from hookd.testing.objects import Datastore, Image

QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class DriverResult:
    """A driver answer: ``ok`` plus the printed output or the error message."""

    ok: bool
    output: str


def _is_dummy(ds: Datastore) -> bool:
    return ds.ds_mad == "dummy"


def _url_args(path: str) -> dict[str, str]:
    query = urlsplit(path).query if "?" in path else ""
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _container_url(path: str) -> bool:
    return bool(re.match(r"^(docker|dockerfile|lxd)://", path))


def stat(ds: Datastore, path: str) -> DriverResult:
    """``<ds_mad>/stat``: image size in MB, or an error message."""
    if _is_dummy(ds):
        return DriverResult(True, "1024")
    if os.path.isdir(path):
        total = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _dirs, files in os.walk(path)
            for f in files
        )
        return _size_mb(total)
    if path.startswith(("docker://", "dockerfile://")):
        size = _url_args(path).get("size")
        if size is None or not size.isdigit():
            return DriverResult(False, "Runtime error during size estimation")
        return _size_mb(int(size) * 1024 * 1024)
    if os.path.isfile(path):
        return _size_mb(os.path.getsize(path))
    if re.match(r"^https?://", path):
        return DriverResult(False, "Failed to get image head")
    return DriverResult(False, "File not found")


def _size_mb(size_bytes: int) -> DriverResult:
    if size_bytes == 0:
        return DriverResult(False, "Runtime error during size estimation")
    return DriverResult(True, str((size_bytes + 1048575) // 1048576))


def image_hash(image_id: int) -> str:
    """``generate_image_hash``: md5 of ``"<epoch seconds>:<image id>\\n"``."""
    digest = hashlib.md5(f"{int(time.time())}:{image_id}\n".encode(), usedforsecurity=False)
    return digest.hexdigest()


def _split_dirs(value: str | None) -> list[str]:
    return value.split() if value else []


def _restricted(ds: Datastore, src: str) -> tuple[bool, str]:
    """``check_restricted`` after ``set_up_datastore`` (libfs.sh)."""
    restricted = ["/var/lib/one/", "/etc/one/", "/var/lib/one/", *_split_dirs(
        ds.template.get("RESTRICTED_DIRS"))]
    listed = " ".join(restricted)
    if re.match(r"^https?://", src):
        return False, listed
    try:
        resolved = os.path.realpath(src, strict=False)
    except OSError:
        return False, listed
    if not os.path.exists(os.path.dirname(resolved) or "/"):
        return False, listed  # readlink -f prints nothing: grep never matches
    for safe in _split_dirs(ds.template.get("SAFE_DIRS")):
        if re.match(safe, resolved):
            return False, listed
    for path in restricted:
        if re.match(path, resolved):
            return True, listed
    return False, listed


def _local_format(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return "raw"
    return "qcow2" if head == QCOW2_MAGIC else "raw"


def copy(ds: Datastore, image: Image, datastore_dir: str | None) -> DriverResult:
    """``<ds_mad>/cp``: ``"<SOURCE> <FORMAT>"`` on success."""
    if _is_dummy(ds):
        return DriverResult(True, "dummy_path dummy_format")
    src = image.path
    url_args = image.template.get("URL_ARGS")
    if url_args:
        src = f"{src}&{url_args}"
    is_restricted, listed = _restricted(ds, src)
    if is_restricted:
        return DriverResult(
            False,
            f"ERROR: cp: Not allowed to copy images from {listed} Not allowed to copy "
            f"image from {src}, check RESTRICTED_DIRS in your datastore",
        )
    digest = image_hash(image.oid)
    destination = f"{ds.base_path}/{digest}"
    if _container_url(src):
        fmt = _url_args(src).get("format", "raw") or "raw"
        return DriverResult(True, f"{destination} {fmt}")
    if re.match(r"^https?://", src):
        return DriverResult(False, f"ERROR: cp: Error copying {src} to {destination}")
    if not os.path.exists(src):
        return DriverResult(False, f"ERROR: cp: Error copying {src} to {destination}")
    fmt = _local_format(src) if os.path.isfile(src) else "raw"
    if datastore_dir is not None:
        target_dir = os.path.join(datastore_dir, str(ds.oid))
        target = os.path.join(target_dir, digest)
        try:
            os.makedirs(target_dir, exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, target)
            else:
                shutil.copyfile(src, target)
        except OSError as exc:
            return DriverResult(False, f"ERROR: cp: Error copying {src} to {target}: {exc}")
        destination = target
    return DriverResult(True, f"{destination} {fmt}")


def mkfs(ds: Datastore, image: Image) -> DriverResult:
    """``<ds_mad>/mkfs``: the new SOURCE."""
    if _is_dummy(ds):
        return DriverResult(True, "dummy_path")
    return DriverResult(True, f"{ds.base_path}/{image_hash(image.oid)}")


def clone(ds: Datastore, source_image: Image, new_image: Image) -> DriverResult:
    """``<ds_mad>/clone``: ``"<SOURCE> <FORMAT>"`` (dummy prints only the path)."""
    if _is_dummy(ds):
        return DriverResult(True, "dummy_path")
    return DriverResult(True, f"{ds.base_path}/{image_hash(new_image.oid)} {source_image.format}")
