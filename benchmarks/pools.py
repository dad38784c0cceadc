"""Bulk-created images and templates shaped like real ``onemarketapp export`` results.

A container image here is what exporting the seeded Docker Hub ``nginx`` app creates
(``PATH=docker://nginx?...``, ``FROM_APP``, ``DEV_PREFIX="vd"``...), and its VM template is the
app's VM template (``common/docker.rb``) plus ``DISK=[IMAGE_ID=...]``, as the export writes it.
A non-container image is an ordinary OS disk image with a plain PATH, used by an ordinary
VM template. Bulk creation (``sim.bulk_images`` / ``sim.bulk_templates``) emits no events,
exactly like objects that existed before hookd started.
"""

from __future__ import annotations

from benchmarks.procs import Pool, SimProcess
from hookd.testing.seed import DOCKERHUB_APPS

CONTAINER_VMTEMPLATE = (
    'CPU="1"\nMEMORY="768"\nGRAPHICS=[LISTEN="0.0.0.0", TYPE="vnc"]\n'
    'CONTEXT=[NETWORK="YES", SSH_PUBLIC_KEY="$USER[SSH_PUBLIC_KEY]", SET_HOSTNAME="$NAME"]\n'
    'OS=[KERNEL_CMD="console=ttyS0 reboot=k panic=1"]\nDISK=[IMAGE_ID="{image_id}"]\n'
)
PLAIN_IMAGE = ('PATH="/var/tmp/images/disk-{i}.qcow2"\nDESCRIPTION="an ordinary disk"\n'
               'DEV_PREFIX="vd"\n')
PLAIN_VMTEMPLATE = ('CPU="1"\nMEMORY="1024"\nCONTEXT=[NETWORK="YES"]\n'
                    'DISK=[IMAGE_ID="{image_id}"]\nNIC=[NETWORK_ID="0"]\n')


def container_image_text(sim: SimProcess, app: str = "nginx") -> str:
    app_id = sim.seed["apps"][f"dockerhub/{app}"]
    md5 = next(m for name, _r, m, _d in DOCKERHUB_APPS if name == app) or "0" * 32
    return (f'PATH="docker://{app}?size=2048&filesystem=ext4&format=raw"\nDEV_PREFIX="vd"\n'
            f'FROM_APP="{app_id}"\nFROM_APP_MD5="{md5}"\nFROM_APP_NAME="{app}"\n'
            'SIZE="2048"\n')


def container_pool(sim: SimProcess, count: int, prefix: str, *, state: str = "LOCKED",
                   datastore: str = "kvm-images") -> Pool:
    """``count`` container images (in ``state``) and one VM template per image."""
    if count <= 0:
        return Pool([], [])
    ds = sim.seed["datastores"][datastore]
    images = sim.client.controls.bulk_images(count, container_image_text(sim), ds, state=state,
                                             name_pattern=f"{prefix}-img-{{i}}")
    templates = sim.client.controls.bulk_templates(count, CONTAINER_VMTEMPLATE, images,
                                                   name_pattern=f"{prefix}-tpl-{{i}}")
    return Pool(list(images), list(templates))


def plain_pool(sim: SimProcess, images: int, templates: int, prefix: str, *,
               chunk: int = 20_000) -> Pool:
    """``images`` ordinary READY OS images (not hookd's business) and ``templates`` VM
    templates using them (cycling over the images)."""
    ds = sim.seed["datastores"]["kvm-images"]
    out = Pool([], [])
    done = 0
    while done < images:
        n = min(chunk, images - done)
        out.image_ids.extend(sim.client.controls.bulk_images(
            n, PLAIN_IMAGE, ds, state="READY", name_pattern=f"{prefix}-{done}-img-{{i}}"))
        done += n
    done = 0
    while done < templates and out.image_ids:
        n = min(chunk, templates - done)
        start = done % len(out.image_ids)
        ids = (out.image_ids[start:] + out.image_ids[:start])[:n]
        out.template_ids.extend(sim.client.controls.bulk_templates(
            n, PLAIN_VMTEMPLATE, ids, name_pattern=f"{prefix}-{done}-tpl-{{i}}"))
        done += n
    return out
